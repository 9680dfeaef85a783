package csr

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// MaxRequestBytes caps spec.request. A kubelet's CSR is well under 4 KiB; the cap
// bounds the parsing work a hostile requester can cause with thousands of SANs.
const MaxRequestBytes = 64 << 10

// MaxRSABits caps RSA modulus size: verifying a signature costs time quadratic in it.
const MaxRSABits = 8192

// PEMType is the only PEM block type a kubelet CSR may have.
const PEMType = "CERTIFICATE REQUEST"

const pemWhitespace = " \t\r\n"

// Errors Parse wraps, for callers and tests that need to tell them apart.
var (
	// ErrNotOnePEMBlock: the request is not exactly one PEM block with only whitespace around it.
	ErrNotOnePEMBlock = errors.New("request must be exactly one pem block with nothing but whitespace around it")
	// ErrPEMType: the PEM block is not a CERTIFICATE REQUEST.
	ErrPEMType = errors.New("pem block type must be " + PEMType)
	// ErrSignature: the request's self-signature does not verify.
	ErrSignature = errors.New("request signature does not verify")
)

// Parse decodes exactly one PEM block of type CERTIFICATE REQUEST with nothing but
// whitespace before or after it, parses it and verifies its signature (rule 4).
// Errors never contain the request's bytes.
func Parse(pemBytes []byte) (*x509.CertificateRequest, error) {
	req, err := parseUnverified(pemBytes)
	if err != nil {
		return nil, err
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return req, nil
}

// parseUnverified is Parse without the signature check, which is nearly all of Parse's
// cost: for reading what a request claims where nothing is decided on it.
func parseUnverified(pemBytes []byte) (*x509.CertificateRequest, error) {
	if len(pemBytes) > MaxRequestBytes {
		return nil, fmt.Errorf("request is %d bytes, more than %d: %w", len(pemBytes), MaxRequestBytes, ErrNotOnePEMBlock)
	}
	// pem.Decode silently skips anything before "-----BEGIN"; refuse it instead.
	trimmed := bytes.TrimLeft(pemBytes, pemWhitespace)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, fmt.Errorf("no pem block at the start of the request: %w", ErrNotOnePEMBlock)
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, fmt.Errorf("malformed pem block: %w", ErrNotOnePEMBlock)
	}
	if len(bytes.Trim(rest, pemWhitespace)) != 0 {
		if bytes.Contains(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("more than one pem block: %w", ErrNotOnePEMBlock)
		}
		return nil, fmt.Errorf("data after the pem block: %w", ErrNotOnePEMBlock)
	}
	if block.Type != PEMType {
		return nil, fmt.Errorf("got %s: %w", QuoteValues([]string{block.Type}), ErrPEMType)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("pem headers are not allowed: %w", ErrNotOnePEMBlock)
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if k, ok := req.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() > MaxRSABits {
		return nil, fmt.Errorf("rsa key of %d bits is larger than %d", k.N.BitLen(), MaxRSABits)
	}
	return req, nil
}
