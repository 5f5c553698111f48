package ctl

import (
	"context"

	"stagesub.dev/deploy/devstack"
)

// runDev runs the whole stack on this machine (see package devstack).
func runDev(ctx context.Context, m *Main, args []string) error {
	return devstack.Run(ctx, args, m.Config.Environ, m.Stdout, m.Stderr)
}
