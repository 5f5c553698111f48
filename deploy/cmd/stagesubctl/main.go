// Command stagesubctl is StageSub's ops CLI. All logic lives in package ctl;
// see docs/stagesubctl.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
)

// version is set at build time (scripts/build: -X main.version=...).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctl.Version = version
	m := &ctl.Main{Stdout: os.Stdout, Stderr: os.Stderr}
	code := m.Exec(ctx, os.Args[1:], os.Environ())
	stop()
	os.Exit(code)
}
