// Command stagesub-admin is the StageSub superadmin dashboard. It watches
// the fleet in Consul, reads every tenant database as the read-only stats
// role, caches the report, serves it (HTML, JSON, Prometheus) and registers
// itself in Consul as service "stagesub-admin".
//
//	stagesub-admin                 run the dashboard (configured from env, see admin/README.md)
//	stagesub-admin hash-password   read a password on stdin, print its argon2id hash
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hash-password" {
		if err := HashPassword(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "stagesub-admin:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain(os.Stderr)
	if err := m.Load(os.Args[1:], os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "stagesub-admin:", err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "stagesub-admin:", err)
		os.Exit(1)
	}
}
