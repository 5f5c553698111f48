// Command devctl stands in for stagesubctl in the devstack tests of
// `dev --detach` and `dev stop`, which re-run "<bin>/stagesubctl dev ...":
// it runs devstack.Run for "dev" and execs the real stagesubctl, installed
// next to it as stagesubctl-real, for every other command.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"stagesub.dev/deploy/devstack"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 || args[0] != "dev" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(os.Stderr, "devctl: %v\n", err)
			os.Exit(1)
		}
		real := filepath.Join(filepath.Dir(exe), "stagesubctl-real")
		err = syscall.Exec(real, append([]string{real}, args...), os.Environ())
		fmt.Fprintf(os.Stderr, "devctl: exec %q: %v\n", real, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := devstack.Run(ctx, args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "devctl: %v\n", err)
		os.Exit(1)
	}
}
