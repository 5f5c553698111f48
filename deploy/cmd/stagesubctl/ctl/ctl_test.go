package ctl_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"stagesub.dev/deploy/cmd/stagesubctl/ctl"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	adminRole     = "stagesub_admin"
	adminPassword = "admin-pw-for-tests"
)

// fixture is a stagesubctl environment on real parts: Postgres checking
// passwords over TCP with a non-superuser CREATEDB CREATEROLE admin role,
// the Consul stand-in, and a secrets dir.
type fixture struct {
	c       *pgtest.Cluster
	env     []string
	store   registry.TenantStore
	consul  *consuldev.Server
	srv     *postgres.Server
	secrets string
}

var adminOnce sync.Once

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	c := pgtest.Start(tb, pgtest.WithTCP())
	ctx := context.Background()
	var err error
	adminOnce.Do(func() {
		err = c.Exec(ctx, "postgres", "CREATE ROLE "+adminRole+" LOGIN CREATEDB CREATEROLE PASSWORD '"+adminPassword+"'")
	})
	if err != nil {
		tb.Fatal(err)
	}
	cs := consuldev.StartTest(tb, consuldev.Config{})
	adminURL := c.TCPURL(adminRole, adminPassword, "postgres")
	srv, err := postgres.Open(ctx, "default", adminURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	f := &fixture{c: c, consul: cs, store: consul.NewStore(cs.Client(tb)), srv: srv, secrets: tb.TempDir()}
	f.env = []string{
		"STAGESUB_PG_ADMIN_URL=" + adminURL,
		"CONSUL_HTTP_ADDR=" + cs.Addr(),
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
