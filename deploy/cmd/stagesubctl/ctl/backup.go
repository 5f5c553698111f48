package ctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/registry"
)

// Environment of the backup commands.
const (
	EnvBackupDir = "STAGESUB_BACKUP_DIR" // default --to of backup and tenant delete
	EnvPGBinDir  = "STAGESUB_PG_BINDIR"  // directory of pg_dump/pg_restore (default /usr/lib/postgresql/15/bin, else PATH)
)

// env returns the value of key in the environment stagesubctl was given.
func (m *Main) env(key string) string {
	for _, kv := range m.Config.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// BackupService wires the backup domain to the adapters. The target is
// attached only when withTarget (restore restarts a running instance).
func (m *Main) BackupService(ctx context.Context, withTarget bool) (*backup.Service, error) {
	p, err := m.Provisioner(ctx)
	if err != nil {
		return nil, err
	}
	servers, err := m.Servers(ctx)
	if err != nil {
		return nil, err
	}
	c, _ := m.Consul()
	s := &backup.Service{
		Store: p.Store, Secrets: p.Secrets, Servers: map[string]backup.Server{}, DefaultServer: DefaultServer,
		Tools: backup.Tools{BinDir: m.env(EnvPGBinDir)}, Locker: consullock.Locker{Client: c},
		AppEnv: p.AppEnv, StatsPassword: m.Config.StatsPassword, Logger: m.Logger,
	}
	for n, srv := range servers {
		s.Servers[n] = srv
	}
	if withTarget {
		if s.Target, err = m.Target(); err != nil {
			m.Logger.Warn("no deploy target; a running instance will not be restarted", "err", err)
		}
	}
	return s, nil
}

func runBackup(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("backup"))
	all := fs.Bool("all", false, "every tenant (not provisioning or deleting)")
	to := fs.String("to", m.env(EnvBackupDir), "backup directory (default $"+EnvBackupDir+")")
	conc := fs.Int("concurrency", 4, "backups at once")
	keep := fs.Int("keep", 0, "keep only the newest N backups of each tenant in the directory (0 = keep all)")
	rcpt := fs.String("recipient", "", "age public key to encrypt to, instead of the tenant's backup recipient")
	slugs, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if *all == (len(slugs) > 0) {
		return &UsageError{Msg: "backup: give --all or one or more slugs"}
	}
	if *to == "" {
		return &UsageError{Msg: "backup: give --to DIR or set " + EnvBackupDir}
	}
	if *conc < 1 || *conc > 64 {
		return &UsageError{Msg: "backup: --concurrency must be 1 to 64"}
	}
	if *keep < 0 {
		return &UsageError{Msg: "backup: --keep must be >= 0"}
	}
	for _, s := range slugs {
		if err := registry.ValidateSlug(s); err != nil {
			return err
		}
	}
	if *rcpt != "" {
		if _, err := backup.ParseRecipient(*rcpt); err != nil {
			return err
		}
	}
	svc, err := m.BackupService(ctx, false)
	if err != nil {
		return err
	}
	var skipped []string
	if *all {
		ts, invalid, err := svc.Store.FindTenants(ctx)
		if err != nil {
			return fmt.Errorf("consul at %s: %w", m.Config.ConsulAddr, err)
		}
		for _, t := range ts {
			if t.Status == registry.StatusProvisioning || t.Status == registry.StatusDeleting {
				skipped = append(skipped, fmt.Sprintf("%s (status %s)", t.Slug, t.Status))
				continue
			}
			slugs = append(slugs, t.Slug)
		}
		for k := range invalid {
			skipped = append(skipped, k+" (invalid record)")
		}
	}
	start := time.Now()
	o := backup.Options{Dir: *to, Recipient: *rcpt, Keep: *keep}
	results := svc.All(ctx, slugs, o, *conc, func(r backup.Result, done, total int) {
		if r.Err != nil {
			fmt.Fprintf(m.Stderr, "[%d/%d] ✗ %s: %v\n", done, total, r.Slug, r.Err)
			return
		}
		fmt.Fprintf(m.Stderr, "[%d/%d] ✓ %s %s (%s)\n", done, total, r.Slug, humanBytes(r.Manifest.Size), r.Elapsed.Round(time.Millisecond))
	})
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tRESULT\tSIZE\tSCHEMA\tFILE")
	var failed int
	var bytes int64
	for _, r := range results {
		if r.Err != nil {
			failed++
			fmt.Fprintf(tw, "%s\tFAILED\t-\t-\t-\n", r.Slug)
			continue
		}
		bytes += r.Manifest.Size
		fmt.Fprintf(tw, "%s\tok\t%s\t%d\t%s\n", r.Slug, humanBytes(r.Manifest.Size), r.Manifest.SchemaVersion, r.Path)
	}
	tw.Flush()
	fmt.Fprintf(m.Stdout, "\n%d tenants: %d backed up (%s), %d failed, %d skipped; %s\n",
		len(results)+len(skipped), len(results)-failed, humanBytes(bytes), failed, len(skipped), time.Since(start).Round(time.Millisecond))
	for _, s := range skipped {
		fmt.Fprintf(m.Stdout, "  skipped %s\n", s)
	}
	if failed > 0 {
		fmt.Fprintln(m.Stdout, "\nfailures:")
		for _, r := range results {
			if r.Err != nil {
				fmt.Fprintf(m.Stdout, "  %s: %v\n", r.Slug, r.Err)
			}
		}
		return &ExitError{Code: 1}
	}
	return nil
}

func runRestore(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("restore"))
	from := fs.String("from", "", "encrypted backup file (<slug>-<time>.dump.age; its manifest beside it)")
	identity := fs.String("identity", "", "age identity file holding the private key")
	into := fs.String("into", "", "restore into a new tenant of this slug")
	force := fs.Bool("force", false, "switch a tenant whose current database exists")
	dropOld := fs.Bool("drop-old", false, "drop the tenant's previous database after the switch")
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *from == "" || *identity == "" {
		return &UsageError{Msg: "restore: want <slug> --from FILE --identity KEYFILE"}
	}
	if err := registry.ValidateSlug(pos[0]); err != nil {
		return err
	}
	ids, err := backup.ReadIdentities(*identity)
	if err != nil {
		return err
	}
	svc, err := m.BackupService(ctx, true)
	if err != nil {
		return err
	}
	res, err := svc.Restore(ctx, backup.RestoreRequest{Slug: pos[0], File: *from, Identities: ids, Into: *into, Force: *force, DropOld: *dropOld})
	if err != nil {
		if res == nil {
			return err
		}
		fmt.Fprintf(m.Stderr, "stagesubctl: warning: %v\n", err)
	}
	w := m.Stdout
	t := res.Tenant
	fmt.Fprintf(w, "restored %s (backup of %s at %s) in %s\n", t.Slug, res.Manifest.Tenant, res.Manifest.CreatedAt.Format(time.RFC3339), res.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  database:  %s (verified: schema version %d, row counts of %d tables)\n", res.Database, res.Manifest.SchemaVersion, len(res.Manifest.Rows))
	switch {
	case res.Created:
		fmt.Fprintf(w, "  tenant:    created, status %s\n", t.Status)
	case res.DroppedOld:
		fmt.Fprintf(w, "  previous:  %s dropped\n", res.OldDatabase)
	default:
		fmt.Fprintf(w, "  previous:  %s kept (drop it with a later `restore --drop-old` or by hand)\n", res.OldDatabase)
	}
	if res.Restarted {
		fmt.Fprintf(w, "  instance:  restarted on the new database\n")
	}
	return nil
}

func runTenantBackupKey(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant backup-key"))
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 3 {
		return &UsageError{Msg: "tenant backup-key: want <slug> [set <age1...> | clear]"}
	}
	slug := pos[0]
	if err := registry.ValidateSlug(slug); err != nil {
		return err
	}
	var want string
	switch {
	case len(pos) == 1:
	case len(pos) == 3 && pos[1] == "set":
		if _, err := backup.ParseRecipient(pos[2]); err != nil {
			return err
		}
		want = strings.TrimSpace(pos[2])
	case len(pos) == 2 && pos[1] == "clear":
	default:
		return &UsageError{Msg: "tenant backup-key: want <slug> [set <age1...> | clear]"}
	}
	store, err := m.Store()
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		t, err := store.FindTenant(ctx, slug)
		if err != nil {
			return err
		}
		if t.BackupRecipient == "" {
			fmt.Fprintf(m.Stdout, "tenant %s has no backup recipient\n", slug)
			return nil
		}
		fmt.Fprintln(m.Stdout, t.BackupRecipient)
		return nil
	}
	_, err = store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
		t.BackupRecipient = want
		t.UpdatedAt = time.Now().UTC()
		return nil
	})
	if err != nil {
		return err
	}
	if want == "" {
		fmt.Fprintf(m.Stdout, "tenant %s: backup recipient cleared\n", slug)
	} else {
		fmt.Fprintf(m.Stdout, "tenant %s: backups are encrypted to %s\n", slug, want)
	}
	return nil
}
