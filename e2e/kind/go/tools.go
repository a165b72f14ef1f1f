//go:build tools

// Package tools keeps the main packages scripts/build-kind.sh builds in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
