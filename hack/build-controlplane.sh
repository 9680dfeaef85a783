#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kubectl,
# kubelet, etcd) from the sources pinned in hack/controlplane/go.mod into $1.
# The module proxy is the only thing this machine reaches, so nothing is downloaded
# prebuilt. Binaries already present are kept: a second run takes seconds.
# When KUBEBUILDER_ASSETS names a directory holding kube-apiserver, etcd and kubectl
# (for example from setup-envtest), those three are taken from there.
set -euo pipefail

out=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")/controlplane" && pwd)
k8s_version=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
major=$(echo "${k8s_version#v}" | cut -d. -f1)
minor=$(echo "${k8s_version#v}" | cut -d. -f2)

# component-base/version is what `--version`, /version and the discovery client report;
# without these the binaries call themselves v0.0.0-master.
pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"

want=(kube-apiserver kube-controller-manager kubectl kubelet)
if [[ -n "${KUBEBUILDER_ASSETS:-}" && "${KUBEBUILDER_ASSETS}" != "$out" ]]; then
	for b in kube-apiserver etcd kubectl; do
		if [[ -x "${KUBEBUILDER_ASSETS}/$b" ]]; then
			ln -sf "${KUBEBUILDER_ASSETS}/$b" "$out/$b"
		fi
	done
fi

missing=()
for b in "${want[@]}"; do
	[[ -x "$out/$b" ]] || missing+=("k8s.io/kubernetes/cmd/$b")
done

cd "$here"
export CGO_ENABLED=0
if ((${#missing[@]} > 0)); then
	echo "building ${missing[*]} ${k8s_version} (first time only; several minutes on 2 cores)"
	go build -trimpath -ldflags "$ldflags" -o "$out/" "${missing[@]}"
fi
if [[ ! -x "$out/etcd" ]]; then
	echo "building etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
	go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
fi
"$out/kube-apiserver" --version
