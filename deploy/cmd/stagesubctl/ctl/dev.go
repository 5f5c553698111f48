package ctl

// TODO(lead): enable with the "dev" line in commands.go once
// stagesub.dev/deploy/devstack exists:
//
//	import "stagesub.dev/deploy/devstack"
//
//	func runDev(ctx context.Context, m *Main, args []string) error {
//		return devstack.Run(ctx, args, m.Config.Environ, m.Stdout, m.Stderr)
//	}
