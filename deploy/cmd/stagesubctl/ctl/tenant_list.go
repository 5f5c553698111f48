package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
)

func runTenantList(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant list"))
	asJSON := fs.Bool("json", false, "print the records as a JSON array")
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return &UsageError{Msg: "tenant list takes no arguments"}
	}
	store, err := m.Store()
	if err != nil {
		return err
	}
	tenants, invalid, err := store.FindTenants(ctx)
	if err != nil {
		return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
	}
	keys := make([]string, 0, len(invalid))
	for k := range invalid {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(m.Stderr, "warning: invalid tenant record %s: %s\n", k, invalid[k])
	}
	if *asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		if tenants == nil {
			return enc.Encode([]any{})
		}
		return enc.Encode(tenants)
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLUG\tSTATUS\tSCHEMA\tSERVER\tNAME\tDOMAINS\tUPDATED")
	for _, t := range tenants {
		server := t.Database.Server
		if server == "" {
			server = DefaultServer
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", t.Slug, t.Status, t.SchemaVersion, server, t.Name,
			strings.Join(t.Domains, ","), t.UpdatedAt.Format("2006-01-02 15:04"))
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\tinvalid\t-\t-\t-\t-\t-\n", k)
	}
	return tw.Flush()
}
