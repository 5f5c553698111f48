package ctl

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

func runTenantDomains(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant domains"))
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || (pos[1] != "add" && pos[1] != "rm") {
		return &UsageError{Msg: "tenant domains: want <slug> add|rm <domain>"}
	}
	slug, op, d := pos[0], pos[1], registry.NormalizeDomain(pos[2])
	if err := registry.ValidateSlug(slug); err != nil {
		return err
	}
	if err := registry.ValidateDomain(d); err != nil {
		return err
	}
	if op == "add" { // rm stays allowed, to clean up such an entry
		if err := deploy.CheckCustomDomain(d, m.Config.BaseDomain); err != nil {
			return err
		}
	}
	store, err := m.Store()
	if err != nil {
		return err
	}
	wrap := func(err error) error {
		if registry.ErrorCode(err) == registry.EINTERNAL {
			return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
		}
		return err
	}
	if op == "add" {
		all, _, err := store.FindTenants(ctx)
		if err != nil {
			return wrap(err)
		}
		if err := deploy.DomainsFree(all, slug, []string{d}); err != nil {
			return err
		}
	}
	changed := false
	t, err := store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		has := slices.Contains(t.Domains, d)
		changed = has != (op == "add")
		switch {
		case op == "add" && !has:
			t.Domains = append(t.Domains, d)
			sort.Strings(t.Domains)
		case op == "rm" && has:
			t.Domains = slices.DeleteFunc(t.Domains, func(x string) bool { return x == d })
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	switch {
	case !changed && op == "add":
		fmt.Fprintf(m.Stdout, "tenant %s already has domain %s\n", slug, d)
	case !changed:
		fmt.Fprintf(m.Stdout, "tenant %s has no domain %s\n", slug, d)
	case op == "add":
		fmt.Fprintf(m.Stdout, "tenant %s: added domain %s\n", slug, d)
	default:
		fmt.Fprintf(m.Stdout, "tenant %s: removed domain %s\n", slug, d)
	}
	fmt.Fprintf(m.Stdout, "domains: %v\n", t.Domains)
	return nil
}
