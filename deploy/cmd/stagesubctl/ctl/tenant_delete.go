package ctl

import (
	"context"
	"fmt"

	"stagesub.dev/deploy/backup"
	"stagesub.dev/deploy/consullock"
	"stagesub.dev/deploy/teardown"
	"stagesub.dev/registry"
)

func runTenantDelete(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant delete"))
	confirm := fs.String("confirm", "", "the slug again, to confirm")
	to := fs.String("to", m.env(EnvBackupDir), "directory of the final backup (default $"+EnvBackupDir+")")
	rcpt := fs.String("recipient", "", "age public key of the final backup, instead of the tenant's")
	waive := fs.Bool("no-backup", false, "delete WITHOUT a final backup (explicit waiver)")
	slug, err := parseSlug(fs, "tenant delete", args)
	if err != nil {
		return err
	}
	if *confirm != slug {
		return &UsageError{Msg: fmt.Sprintf("tenant delete: deleting is permanent; confirm with --confirm %s", slug)}
	}
	if !*waive && *to == "" {
		return &UsageError{Msg: "tenant delete: the final backup needs --to DIR or " + EnvBackupDir}
	}
	svc, err := m.BackupService(ctx, false)
	if err != nil {
		return err
	}
	servers, _ := m.Servers(ctx)
	c, _ := m.Consul()
	d := &teardown.Deleter{
		Store: svc.Store, Secrets: svc.Secrets, Servers: map[string]teardown.Server{}, DefaultServer: DefaultServer,
		Backup: svc, Locker: consullock.Locker{Client: c}, AppEnv: svc.AppEnv, Logger: m.Logger,
	}
	for n, s := range servers {
		d.Servers[n] = s
	}
	if t, err := m.Target(); err == nil {
		d.Target = t
	} else {
		m.Logger.Warn("no deploy target; the instance is not stopped by stagesubctl", "err", err)
	}
	res, err := d.Delete(ctx, teardown.Request{Slug: slug, WaiveBackup: *waive, Backup: backup.Options{Dir: *to, Recipient: *rcpt}})
	if err != nil {
		return err
	}
	w := m.Stdout
	fmt.Fprintf(w, "tenant %s deleted in %s\n", slug, res.Elapsed.Round(1e6))
	if res.Backup != nil {
		fmt.Fprintf(w, "  final backup: %s (%s, sha256 %s)\n", res.Backup.Path, humanBytes(res.Backup.Manifest.Size), res.Backup.Manifest.SHA256)
	} else {
		fmt.Fprintf(w, "  final backup: waived\n")
	}
	if res.StoppedInstance {
		fmt.Fprintf(w, "  instance:     stopped\n")
	}
	for _, db := range res.Databases {
		fmt.Fprintf(w, "  dropped:      database %s\n", db)
	}
	fmt.Fprintf(w, "  dropped:      role %s, env file, record\n", registry.RoleName(slug))
	return nil
}
