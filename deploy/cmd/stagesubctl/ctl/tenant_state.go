package ctl

import (
	"context"
	"fmt"

	"stagesub.dev/registry"
)

func runTenantSuspend(ctx context.Context, m *Main, args []string) error {
	return setStatus(ctx, m, "tenant suspend", args, registry.StatusSuspended,
		registry.StatusActive, registry.StatusMaintenance)
}

func runTenantResume(ctx context.Context, m *Main, args []string) error {
	return setStatus(ctx, m, "tenant resume", args, registry.StatusActive,
		registry.StatusSuspended, registry.StatusMaintenance)
}

// setStatus moves a tenant to status to when its status is one of from or
// already to (a no-op); anything else (provisioning, deleting) is refused.
func setStatus(ctx context.Context, m *Main, name string, args []string, to registry.Status, from ...registry.Status) error {
	fs := m.FlagSet(cmdByName(name))
	slug, err := parseSlug(fs, name, args)
	if err != nil {
		return err
	}
	store, err := m.Store()
	if err != nil {
		return err
	}
	var was registry.Status
	t, err := store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		was = t.Status
		if t.Status == to {
			return nil
		}
		for _, f := range from {
			if t.Status == f {
				t.Status = to
				return nil
			}
		}
		return registry.Errorf(registry.ECONFLICT, "tenant %s is %s; cannot change it to %s", slug, t.Status, to)
	})
	if err != nil {
		if registry.ErrorCode(err) == registry.EINTERNAL {
			return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
		}
		return err
	}
	if was == to {
		fmt.Fprintf(m.Stdout, "tenant %s is already %s\n", slug, to)
		return nil
	}
	fmt.Fprintf(m.Stdout, "tenant %s: %s → %s\n", slug, was, t.Status)
	return nil
}
