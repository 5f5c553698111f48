package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/registry"
)

// ShowInstance is one registered app instance of a tenant.
type ShowInstance struct {
	ID      string          `json:"id"`
	Node    string          `json:"node"`
	Address string          `json:"address"`
	Version string          `json:"version,omitempty"`
	Health  registry.Health `json:"health"`
}

// ShowResult is what `tenant show --json` prints.
type ShowResult struct {
	Tenant        *registry.Tenant `json:"tenant"`
	URL           string           `json:"url"`
	Instances     []ShowInstance   `json:"instances"`
	LiveSchema    *int64           `json:"live_schema_version,omitempty"`
	LatestSchema  int64            `json:"latest_schema_version"`
	DatabaseBytes *int64           `json:"database_bytes,omitempty"`
	Problems      []string         `json:"problems,omitempty"`
}

func runTenantShow(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant show"))
	asJSON := fs.Bool("json", false, "print JSON")
	slug, err := parseSlug(fs, "tenant show", args)
	if err != nil {
		return err
	}
	store, err := m.Store()
	if err != nil {
		return err
	}
	t, err := store.FindTenant(ctx, slug)
	if err != nil {
		if registry.ErrorCode(err) == registry.EINTERNAL {
			return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
		}
		return err
	}
	r := ShowResult{Tenant: t, URL: m.TenantURL(slug), LatestSchema: schema.Latest(), Instances: []ShowInstance{}}

	c, _ := m.Consul()
	entries, _, err := c.Health().Service(registry.ServiceApp, registry.TenantTag(slug), false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("instances: consul: %v", err))
	}
	for _, e := range entries {
		if e.Service.Meta[registry.MetaTenant] != slug {
			continue
		}
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		h := registry.HealthPassing
		switch e.Checks.AggregatedStatus() {
		case api.HealthWarning:
			h = registry.HealthWarning
		case api.HealthCritical, api.HealthMaint:
			h = registry.HealthCritical
		}
		r.Instances = append(r.Instances, ShowInstance{ID: e.Service.ID, Node: e.Node.Node,
			Address: fmt.Sprintf("%s:%d", addr, e.Service.Port), Version: e.Service.Meta[registry.MetaVersion], Health: h})
	}
	sort.Slice(r.Instances, func(i, j int) bool { return r.Instances[i].ID < r.Instances[j].ID })

	// The live schema version and size, as the tenant role (the admin role
	// has no CONNECT on tenant databases).
	if sec, err := m.Secrets(); err != nil {
		r.Problems = append(r.Problems, err.Error())
	} else if env, err := sec.Read(slug); err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("credentials: %v", err))
	} else {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		db, err := postgres.OpenTenant(cctx, env[registry.EnvDatabaseURL])
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("database %s: %v", t.Database.Name, err))
		} else {
			if v, err := schema.Current(cctx, db); err == nil {
				r.LiveSchema = &v
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("schema version: %v", err))
			}
			var size int64
			if err := db.QueryRowContext(cctx, "SELECT pg_database_size(current_database())").Scan(&size); err == nil {
				r.DatabaseBytes = &size
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("database size: %v", err))
			}
			db.Close()
		}
		cancel()
	}

	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	w := m.Stdout
	fmt.Fprintf(w, "tenant:    %s\n", t.Slug)
	fmt.Fprintf(w, "name:      %s\n", t.Name)
	fmt.Fprintf(w, "status:    %s\n", t.Status)
	fmt.Fprintf(w, "url:       %s\n", r.URL)
	if len(t.Domains) > 0 {
		fmt.Fprintf(w, "domains:   %s\n", strings.Join(t.Domains, ", "))
	}
	fmt.Fprintf(w, "database:  %s on server %s (%s:%d)\n", t.Database.Name, t.Database.Server, t.Database.Host, t.Database.Port)
	if r.DatabaseBytes != nil {
		fmt.Fprintf(w, "size:      %s\n", humanBytes(*r.DatabaseBytes))
	}
	live := "unknown"
	if r.LiveSchema != nil {
		live = fmt.Sprint(*r.LiveSchema)
	}
	fmt.Fprintf(w, "schema:    recorded %d, live %s, latest %d\n", t.SchemaVersion, live, r.LatestSchema)
	fmt.Fprintf(w, "created:   %s\nupdated:   %s\n", t.CreatedAt.Format(time.RFC3339), t.UpdatedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "instances: %d\n", len(r.Instances))
	for _, in := range r.Instances {
		fmt.Fprintf(w, "  %s  %s  %s  %s\n", in.ID, in.Address, in.Health, in.Version)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem:   %s\n", p)
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for x := n / unit; x >= unit && exp < 4; x /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
