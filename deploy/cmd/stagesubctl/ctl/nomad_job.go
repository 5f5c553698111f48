package ctl

import (
	"context"
	"encoding/json"
	"fmt"

	"stagesub.dev/deploy/nomad"
	"stagesub.dev/registry"
)

// runNomadAppJob prints the Nomad job of a tenant's app (the body of
// `PUT /v1/jobs`) and, with --variable, the Nomad Variable that hands the app
// its DATABASE_URL, read from the tenant's env file. The variable holds a
// secret: write it straight to `nomad var put`, never to a file in git.
func runNomadAppJob(ctx context.Context, m *Main, args []string) error {
	fs := m.FlagSet(cmdByName("nomad app-job"))
	variable := fs.Bool("variable", false, "print the Nomad Variable (with DATABASE_URL) instead of the job")
	count := fs.Int("count", 1, "instances of the tenant's app")
	binDir := fs.String("bin-dir", "/usr/local/bin", "where stagesub-app is installed on Nomad clients")
	consulAddr := fs.String("consul-addr", "127.0.0.1:8500", "CONSUL_HTTP_ADDR as seen from a task")
	pos, err := Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &UsageError{Msg: "usage: stagesubctl nomad app-job <slug> [--variable]"}
	}
	slug := pos[0]
	if *variable {
		sec, err := m.Secrets()
		if err != nil {
			return err
		}
		env, err := sec.Read(slug)
		if err != nil {
			return fmt.Errorf("tenant %s: read env file: %w", slug, err)
		}
		v, err := nomad.AppVariable(slug, env[registry.EnvDatabaseURL], env[registry.EnvConsulToken])
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("nomad: encode variable: %w", err)
		}
		_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
		return err
	}
	if m.Config.BaseDomain == "" {
		return fmt.Errorf("STAGESUB_BASE_DOMAIN is not set")
	}
	j, err := nomad.AppJob(slug, nomad.AppOptions{
		Common: nomad.Common{BaseDomain: m.Config.BaseDomain, BinDir: *binDir, ConsulAddr: *consulAddr, Version: Version},
		Count:  *count,
	})
	if err != nil {
		return err
	}
	b, err := nomad.JobJSON(j)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
	return err
}
