//go:build tools

// Package tools keeps flanneld's main package, built by scripts/build-flannel.sh, in
// go.mod/go.sum (go mod tidy would otherwise drop it).
package tools

import (
	_ "github.com/flannel-io/flannel"
)
