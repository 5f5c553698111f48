package ctl

import (
	"context"
	"fmt"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// runTenantRepair re-applies the idempotent security and setup steps of an
// existing tenant (deploy.Provisioner.Repair) and prints what it fixed.
// Any failure is exit 1; a healthy tenant reports "nothing to fix".
func runTenantRepair(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant repair"))
	var req deploy.RepairRequest
	fs.StringVar(&req.AdminEmail, "admin-email", "", "create the first staff admin with this e-mail if the tenant has none")
	slug, err := parseSlug(fs, "tenant repair", args)
	if err != nil {
		return err
	}
	req.Slug = slug
	p, err := m.Provisioner(ctx)
	if err != nil {
		return err
	}
	res, err := p.Repair(ctx, req)
	if err != nil {
		return err
	}
	w := m.Stdout
	if len(res.Fixed) == 0 {
		fmt.Fprintf(w, "tenant %s: nothing to fix\n", req.Slug)
	} else {
		fmt.Fprintf(w, "tenant %s: fixed %d problem(s):\n", req.Slug, len(res.Fixed))
		for _, f := range res.Fixed {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	}
	if p.StatsPassword != "" {
		fmt.Fprintf(w, "  password of %s set from %s\n", registry.StatsRole, EnvStatsPassword)
	}
	switch {
	case res.AdminCreated:
		fmt.Fprintf(w, "  admin:     %s\n  one-time password (shown once; change it on the Account page after logging in): %s\n", req.AdminEmail, res.AdminPassword)
	case res.AdminExisted:
		fmt.Fprintf(w, "  admin:     %s (already existed; password unchanged)\n", req.AdminEmail)
	}
	if res.RestartNeeded {
		fmt.Fprintf(w, "  the tenant role's password changed (env file %s): restart the tenant's instance\n", res.EnvFile)
	}
	return nil
}
