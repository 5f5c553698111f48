package ctl

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"stagesub.dev/deploy/importshared"
)

func runImportShared(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("import-shared"))
	from := fs.String("from", "", "DSN of the legacy shared database (a read-only role is enough)")
	col := fs.String("tenant-column", "", "column that holds the legacy tenant id in every tenant-owned table")
	schemaName := fs.String("schema", "public", "schema of the legacy tables")
	dry := fs.Bool("dry-run", false, "show the plan (tables in copy order, rows per tenant) without creating anything")
	var maps stringsFlag
	fs.Var(&maps, "map", "LEGACY_ID=slug[,LEGACY_ID=slug...] (repeatable)")
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *from == "" || *col == "" || len(maps) == 0 {
		return &UsageError{Msg: "import-shared: want --from DSN --tenant-column COL --map ID=slug,..."}
	}
	mapping, err := importshared.ParseMap(maps)
	if err != nil {
		return err
	}
	p, err := m.Provisioner(ctx)
	if err != nil {
		return err
	}
	im := &importshared.Importer{Provisioner: p, Logger: m.Logger}
	start := time.Now()
	rep, err := im.Run(ctx, importshared.Request{
		SourceURL: *from, Schema: *schemaName, TenantColumn: *col, Map: mapping, DryRun: *dry,
		OnTenant: func(r importshared.TenantResult) {
			if r.Err != nil {
				fmt.Fprintf(m.Stderr, "✗ %s (legacy %s): %v\n", r.Slug, r.LegacyID, r.Err)
				return
			}
			fmt.Fprintf(m.Stderr, "✓ %s (legacy %s): %s in %s\n", r.Slug, r.LegacyID, r.State, r.Elapsed.Round(time.Millisecond))
		},
	})
	if err != nil {
		return err
	}
	w := m.Stdout
	var order []string
	for _, t := range rep.Tables {
		order = append(order, t.Name)
	}
	fmt.Fprintf(w, "tables in copy order: %s\n", strings.Join(order, " → "))
	if len(rep.Ignored) > 0 {
		fmt.Fprintf(w, "not copied (no column %s): %s\n", *col, strings.Join(rep.Ignored, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nTENANT\tLEGACY ID\tSTATE\t%s\n", strings.ToUpper(strings.Join(order, "\t")))
	for _, r := range rep.Tenants {
		var cells []string
		for _, c := range r.Counts {
			switch {
			case c.Target < 0:
				cells = append(cells, fmt.Sprint(c.Source))
			case c.Target == c.Source:
				cells = append(cells, fmt.Sprintf("%d ✓", c.Target))
			default:
				cells = append(cells, fmt.Sprintf("%d/%d ✗", c.Target, c.Source))
			}
		}
		for len(cells) < len(order) {
			cells = append(cells, "?")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Slug, r.LegacyID, r.State, strings.Join(cells, "\t"))
	}
	tw.Flush()
	if len(rep.Unmapped) > 0 {
		var ids []string
		for id, n := range rep.Unmapped {
			ids = append(ids, fmt.Sprintf("%s (%d rows)", id, n))
		}
		sort.Strings(ids)
		fmt.Fprintf(w, "\nlegacy ids not in --map, not imported: %s\n", strings.Join(ids, ", "))
	}
	failed := rep.Failed()
	fmt.Fprintf(w, "\n%d tenants, %d failed; %s\n", len(rep.Tenants), failed, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		fmt.Fprintln(w, "\nfailures:")
		for _, r := range rep.Tenants {
			if r.Err != nil {
				fmt.Fprintf(w, "  %s: %v\n", r.Slug, r.Err)
			}
		}
		fmt.Fprintln(w, "fix them and re-run the same command: imported tenants are skipped.")
		return &ExitError{Code: 1}
	}
	return nil
}
