// Command stagesub-consul runs the in-memory Consul stand-in
// (stagesub.dev/registry/consuldev) with a command line compatible with the
// subset of `consul` that development tools and HashiCorp's sdk/testutil use:
//
//	stagesub-consul agent -dev -client=127.0.0.1 -http-port=8500 [-data-dir=DIR]
//	stagesub-consul agent -config-file=F [-config-file=G ...] [-config-dir=D]
//	stagesub-consul version [-format=json]
//
// It is a single-node development and test stand-in, not a Consul cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	m := NewMain(os.Stdout, os.Stderr)
	if err := m.Load(os.Args[1:], os.Environ()); err != nil {
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errDone) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "stagesub-consul:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stagesub-consul:", err)
		os.Exit(1)
	}
}
