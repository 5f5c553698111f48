package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"stagesub.dev/app/schema"
	"stagesub.dev/deploy"
)

func runMigrate(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("migrate"))
	all := fs.Bool("all", false, "every tenant (not provisioning or deleting)")
	conc := fs.Int("concurrency", 8, "tenants migrated at once")
	dry := fs.Bool("dry-run", false, "show versions and pending migrations only")
	slugs, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if *all == (len(slugs) > 0) {
		return &UsageError{Msg: "migrate: give --all or one or more slugs"}
	}
	if *conc < 1 || *conc > 256 {
		return &UsageError{Msg: "migrate: --concurrency must be 1 to 256"}
	}
	p, err := m.Provisioner(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	prog := newProgress(m.Stderr, m.isTerminal(m.Stderr))
	results, err := p.Migrate(ctx, deploy.MigrateOptions{
		Slugs: slugs, Concurrency: *conc, DryRun: *dry,
		OnResult: prog.result,
	})
	prog.finish()
	if err != nil {
		return err
	}
	return printMigrateSummary(m.Stdout, results, *dry, time.Since(start))
}

func printMigrateSummary(w io.Writer, results []deploy.MigrateResult, dry bool, elapsed time.Duration) error {
	var failed, skipped, changed, pending int
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tRESULT\tVERSION\tPENDING")
	for _, r := range results {
		switch {
		case r.Err != nil:
			failed++
			fmt.Fprintf(tw, "%s\tFAILED\t?\t?\n", r.Slug)
		case r.Skipped != "":
			skipped++
			fmt.Fprintf(tw, "%s\tskipped (%s)\t-\t-\n", r.Slug, r.Skipped)
		case dry:
			if r.Pending() > 0 {
				pending++
			}
			fmt.Fprintf(tw, "%s\tok\t%d\t%d\n", r.Slug, r.To, r.Pending())
		default:
			res := "up to date"
			if r.To != r.From {
				res = fmt.Sprintf("migrated %d → %d", r.From, r.To)
				changed++
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", r.Slug, res, r.To, r.Pending())
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ok := len(results) - failed - skipped
	done := fmt.Sprintf("%d migrated (%d changed)", ok, changed)
	if dry {
		done = fmt.Sprintf("%d checked (dry run, %d with pending migrations)", ok, pending)
	}
	fmt.Fprintf(w, "\n%d tenants: %s, %d skipped, %d failed; latest version %d; %s\n",
		len(results), done, skipped, failed, schema.Latest(), elapsed.Round(time.Millisecond))
	if failed == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nfailures:\n")
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(w, "  %s: %v\n", r.Slug, r.Err)
		}
	}
	fmt.Fprintf(w, "re-run the same command after fixing them; tenants already up to date are no-ops.\n")
	return &ExitError{Code: 1}
}

// progress shows a bar on a terminal and one line per tenant otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	last time.Time
	done int
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty} }

// result is called serially by deploy.Migrate.
func (p *progress) result(r deploy.MigrateResult, done, total int) {
	p.done = done
	if !p.tty {
		switch {
		case r.Err != nil:
			fmt.Fprintf(p.w, "[%d/%d] %s FAILED: %v\n", done, total, r.Slug, r.Err)
		case r.Skipped != "":
			fmt.Fprintf(p.w, "[%d/%d] %s skipped (%s)\n", done, total, r.Slug, r.Skipped)
		case r.From == r.To:
			fmt.Fprintf(p.w, "[%d/%d] %s ok at version %d, %d pending (%s)\n", done, total, r.Slug, r.To, r.Pending(), r.Elapsed.Round(time.Millisecond))
		default:
			fmt.Fprintf(p.w, "[%d/%d] %s ok %d → %d (%s)\n", done, total, r.Slug, r.From, r.To, r.Elapsed.Round(time.Millisecond))
		}
		return
	}
	if r.Err != nil {
		fmt.Fprintf(p.w, "\r\033[K%s FAILED: %v\n", r.Slug, r.Err)
	}
	if done < total && time.Since(p.last) < 50*time.Millisecond && r.Err == nil {
		return
	}
	p.last = time.Now()
	const width = 30
	n := width * done / max(total, 1)
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %d/%d %s", strings.Repeat("#", n), strings.Repeat(".", width-n), done, total, r.Slug)
}

func (p *progress) finish() {
	if p.tty && p.done > 0 {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
