package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"stagesub.dev/deploy/doctor"
	"stagesub.dev/registry"
)

// Environment of the doctor command.
const (
	EnvDNSResolver = "STAGESUB_DNS_RESOLVER" // DNS server host:port to check <slug>.<base> with; unset skips DNS
	EnvRouterURL   = "STAGESUB_ROUTER_URL"   // router address http(s)://host:port; unset skips router and certificate
	EnvCAFile      = "STAGESUB_CA_FILE"      // roots for the router's certificate; unset = system roots
)

// Doctor wires the doctor to the adapters.
func (m *Main) Doctor() (*doctor.Doctor, error) {
	store, err := m.Store()
	if err != nil {
		return nil, err
	}
	c, _ := m.Consul()
	sec, err := m.Secrets()
	if err != nil {
		return nil, err
	}
	return &doctor.Doctor{
		Store: store, Consul: c, ConsulAddr: m.Config.ConsulAddr, Secrets: sec,
		BaseDomain: m.Config.BaseDomain, Resolver: m.env(EnvDNSResolver),
		RouterURL: m.env(EnvRouterURL), CAFile: m.env(EnvCAFile),
	}, nil
}

func runDoctor(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("doctor"))
	all := fs.Bool("all", false, "every tenant")
	asJSON := fs.Bool("json", false, "print JSON")
	slugs, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if *all == (len(slugs) > 0) {
		return &UsageError{Msg: "doctor: give --all or one or more slugs"}
	}
	d, err := m.Doctor()
	if err != nil {
		return err
	}
	if *all {
		ts, invalid, err := d.Store.FindTenants(ctx)
		if err != nil {
			return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
		}
		for _, t := range ts {
			slugs = append(slugs, t.Slug)
		}
		for k := range invalid {
			if s := strings.TrimPrefix(k, registry.KeyPrefix); s != "" {
				slugs = append(slugs, s)
			}
		}
	}
	var reports []*doctor.Report
	failed := 0
	for _, s := range slugs {
		r := d.Check(ctx, s)
		reports = append(reports, r)
		if !r.OK() {
			failed++
		}
		if !*asJSON {
			printReport(m.Stdout, r)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else if len(reports) > 1 {
		fmt.Fprintf(m.Stdout, "%d tenants checked, %d with problems\n", len(reports), failed)
	}
	if failed > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

func printReport(w io.Writer, r *doctor.Report) {
	fmt.Fprintf(w, "%s (%s)\n", r.Slug, r.Host)
	for _, c := range r.Checks {
		mark := "✓"
		switch c.Result {
		case doctor.Fail:
			mark = "✗"
		case doctor.Skip:
			mark = "–"
		}
		fmt.Fprintf(w, "  %s %-12s %s\n", mark, c.Name, c.Detail)
		if c.Result == doctor.Fail && c.Remedy != "" {
			fmt.Fprintf(w, "    %-12s → %s\n", "", c.Remedy)
		}
	}
	fmt.Fprintln(w)
}
