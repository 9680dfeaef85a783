# Base images are pinned by tag and digest: the tag says what the image is, the digest
# which one, so a rebuilt tag cannot change the binary or the runtime under us. Bump both
# together (crane digest golang:1.26.8-bookworm).
#
# Build the manager binary exactly as `make build` does.
FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# The toolchain of the image, never one downloaded because go.mod asks for a newer one.
ENV GOTOOLCHAIN=local
# Dependencies first: this layer is cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY main.go main.go
COPY api/ api/
COPY controllers/ controllers/
COPY internal/ internal/

RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -o manager .

# A static binary on distroless: no shell, no package manager, runs as non-root.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
WORKDIR /
COPY --from=builder /workspace/manager .
USER 65532:65532

ENTRYPOINT ["/manager"]
