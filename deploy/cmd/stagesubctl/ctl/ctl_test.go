package ctl_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/deploy/deploytest"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consuldev"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is a stagesubctl environment on real parts (deploytest.Env):
// Postgres checking passwords over TCP with a non-superuser CREATEDB
// CREATEROLE admin role, the Consul stand-in, and a secrets dir.
type fixture struct {
	c       *pgtest.Cluster
	env     []string
	store   registry.TenantStore
	consul  *consuldev.Server
	srv     *postgres.Server
	secrets string
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	k := deploytest.MustEnv(tb)
	f := &fixture{c: k.Cluster, consul: k.Consul, store: k.Store, srv: k.Server, secrets: k.Secrets.Path}
	f.env = []string{
		"STAGESUB_PG_ADMIN_URL=" + k.AdminURL,
		"CONSUL_HTTP_ADDR=" + k.Consul.Addr(),
		"STAGESUB_SECRETS_DIR=" + f.secrets,
		"STAGESUB_STATS_PASSWORD=stats-pw",
		"STAGESUB_BASE_DOMAIN=stagesub.test",
	}
	return f
}

// drop removes the tenants' databases and roles when tb ends.
func (f *fixture) drop(tb testing.TB, slugs ...string) {
	tb.Cleanup(func() {
		for _, s := range slugs {
			if err := f.srv.DropTenant(context.Background(), s); err != nil {
				tb.Logf("drop %s: %v", s, err)
			}
		}
	})
}

// run runs stagesubctl in-process.
func (f *fixture) run(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	return runEnv(tb, f.env, args...)
}

func runEnv(tb testing.TB, env []string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errb bytes.Buffer
	m := &ctl.Main{Stdout: &out, Stderr: &errb}
	code = m.Exec(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func (f *fixture) mustRun(tb testing.TB, args ...string) string {
	tb.Helper()
	code, out, errs := f.run(tb, args...)
	if code != 0 {
		tb.Fatalf("stagesubctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func contains(tb testing.TB, what, s string, subs ...string) {
	tb.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			tb.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}
