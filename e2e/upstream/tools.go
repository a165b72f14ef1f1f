//go:build tools

// Package tools keeps agnhost (the test image most upstream network specs run) and the
// ginkgo CLI (which runs the specs in parallel processes) in go.mod/go.sum;
// scripts/build-conformance.sh builds both from this module.
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
