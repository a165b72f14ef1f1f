// Command etcd is a thin wrapper that builds the etcd server at the version
// selected for k8s.io/kubernetes v1.34.4 (see go.mod).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
