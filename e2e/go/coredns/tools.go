//go:build tools

// Package tools keeps CoreDNS's main package, built by scripts/build-coredns.sh, in
// go.mod/go.sum (go mod tidy would otherwise drop it).
package tools

import (
	_ "github.com/coredns/coredns"
)
