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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	m := &ctl.Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	code := m.Exec(ctx, os.Args[1:], os.Environ())
	stop()
	os.Exit(code)
}
