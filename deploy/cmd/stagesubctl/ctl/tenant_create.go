package ctl

import (
	"context"
	"fmt"
	"strings"

	"stagesub.dev/deploy"
	"stagesub.dev/registry"
)

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func runTenantCreate(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("tenant create"))
	var req deploy.CreateRequest
	var domains stringsFlag
	fs.StringVar(&req.Name, "name", "", "display name of the orchestra (required)")
	fs.StringVar(&req.AdminEmail, "admin-email", "", "e-mail of the first staff admin")
	fs.Var(&domains, "domain", "extra custom domain (repeatable)")
	fs.StringVar(&req.DBServer, "db-server", "", "named Postgres server (STAGESUB_PG_ADMIN_URL_<NAME>)")
	fs.BoolVar(&req.Start, "start", false, "start an instance through the deploy target (STAGESUB_TARGET)")
	fs.StringVar(&req.BackupRecipient, "backup-recipient", "", "age public key (age1...) that backups are encrypted to")
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &UsageError{Msg: "tenant create: want exactly one <slug>"}
	}
	req.Slug, req.Domains = pos[0], domains
	// Bad input fails before any connection is made.
	if err := req.Validate(); err != nil {
		return err
	}
	for _, d := range req.Domains {
		if err := deploy.CheckCustomDomain(d, m.Config.BaseDomain); err != nil {
			return err
		}
	}
	if req.DBServer != "" {
		req.DBServer = strings.ToLower(req.DBServer)
	}
	p, err := m.Provisioner(ctx)
	if err != nil {
		return err
	}
	if _, err := p.Server(req.DBServer); err != nil {
		return err
	}
	if req.Start {
		if p.Target, err = m.Target(); err != nil {
			return err
		}
	}
	res, err := p.Create(ctx, req)
	if err != nil {
		if registry.ErrorCode(err) == registry.EINTERNAL {
			return fmt.Errorf("%w\n(tenant %s is left in status provisioning if its record was written; re-run the same command to finish it)", err, req.Slug)
		}
		return err
	}
	t := res.Tenant
	verb := "created"
	if res.Resumed {
		verb = "finished (resumed a half-created tenant)"
	}
	w := m.Stdout
	fmt.Fprintf(w, "tenant %s %s in %s\n", t.Slug, verb, res.Elapsed.Round(1e6))
	fmt.Fprintf(w, "  name:      %s\n", t.Name)
	fmt.Fprintf(w, "  url:       %s\n", m.TenantURL(t.Slug))
	for _, d := range t.Domains {
		fmt.Fprintf(w, "  domain:    https://%s/\n", d)
	}
	fmt.Fprintf(w, "  status:    %s\n", t.Status)
	fmt.Fprintf(w, "  database:  %s on server %s (%s:%d)\n", t.Database.Name, t.Database.Server, t.Database.Host, t.Database.Port)
	fmt.Fprintf(w, "  schema:    version %d\n", t.SchemaVersion)
	fmt.Fprintf(w, "  env file:  %s\n", res.EnvFile)
	switch {
	case res.AdminCreated:
		fmt.Fprintf(w, "  admin:     %s\n  one-time password (shown once; change it on the Account page after logging in): %s\n", req.AdminEmail, res.AdminPassword)
	case req.AdminEmail != "":
		fmt.Fprintf(w, "  admin:     %s (already existed; password unchanged)\n", req.AdminEmail)
	default:
		fmt.Fprintf(m.Stderr, "stagesubctl: warning: tenant %s has no staff login (no --admin-email); create the first admin with:\n  stagesubctl tenant repair %s --admin-email <e-mail>\n", t.Slug, t.Slug)
	}
	if res.Started {
		fmt.Fprintf(w, "  instance:  started on target %s\n", p.Target.Name())
	}
	return nil
}

func cmdByName(name string) *Command {
	for _, c := range commands {
		if c.Name == name {
			return c
		}
	}
	panic("ctl: no command " + name)
}
