//go:build tools

// Package tools keeps Helm's command, built by scripts/build-helm.sh, in go.mod/go.sum
// (go mod tidy would otherwise drop it).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
