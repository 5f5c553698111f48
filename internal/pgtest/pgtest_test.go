package pgtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func MustConnect(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestSharedClusterTemplateAndCreateDB(t *testing.T) {
	c := pgtest.Start(t)
	if got := pgtest.Start(t); got != c {
		t.Fatalf("Start returned a second cluster %p, want the shared %p", got, c)
	}
	if got, max := len(c.SocketDir())+len("/.s.PGSQL.5432"), 107; got > max {
		t.Errorf("socket path length %d > %d", got, max)
	}
	calls := 0
	setup := func(ctx context.Context, url string) error {
		calls++
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('from template')")
		return err
	}
	tmpl := c.Template(t, "tmpl_test", setup)
	tmpl2 := c.Template(t, "tmpl_test", setup)
	if got, want := calls, 1; got != want {
		t.Errorf("setup calls = %d, want %d", got, want)
	}
	if tmpl != tmpl2 {
		t.Errorf("template names differ: %q %q", tmpl, tmpl2)
	}

	name1, url1 := c.CreateDB(t, tmpl)
	name2, _ := c.CreateDB(t, tmpl)
	if name1 == name2 {
		t.Fatalf("CreateDB returned the same name twice: %q", name1)
	}
	conn := MustConnect(t, url1)
	var got string
	if err := conn.QueryRow(context.Background(), "SELECT v FROM marker").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "from template"; got != want {
		t.Errorf("marker = %q, want %q", got, want)
	}
	var db, usr string
	if err := conn.QueryRow(context.Background(), "SELECT current_database(), current_user").Scan(&db, &usr); err != nil {
		t.Fatal(err)
	}
	if db != name1 || usr != pgtest.Superuser {
		t.Errorf("connected to %s as %s, want %s as %s", db, usr, name1, pgtest.Superuser)
	}
	var fsync string
	if err := conn.QueryRow(context.Background(), "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if fsync != "off" {
		t.Errorf("fsync = %s, want off", fsync)
	}
}

func TestStopStart(t *testing.T) {
	c := pgtest.New(t)
	_, url := c.CreateDB(t, "")
	ctx := context.Background()
	MustConnect(t, url)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(cctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("connect succeeded while the server is stopped")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	MustConnect(t, url)
}

func TestTCPScram(t *testing.T) {
	c := pgtest.New(t, pgtest.WithTCP())
	ctx := context.Background()
	if err := c.Exec(ctx, "postgres", "CREATE ROLE alice LOGIN PASSWORD 'right'"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.TCPAddr(), "127.0.0.1:") {
		t.Fatalf("TCPAddr = %q", c.TCPAddr())
	}
	MustConnect(t, c.TCPURL("alice", "right", "postgres"))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.TCPURL("alice", "wrong", "postgres"))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("wrong password accepted over TCP")
	}
	if !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("err = %v, want password authentication failed", err)
	}
}

// recorder is a testing.TB that records Fatalf and Skipf instead of
// stopping the goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(func())            {}
func (r *recorder) Fatalf(f string, a ...any) { r.fatal = fmt.Sprintf(f, a...) }
func (r *recorder) Skipf(f string, a ...any)  { r.skip = fmt.Sprintf(f, a...) }

func TestMissingBinaries(t *testing.T) {
	tests := []struct {
		name, ci, required string
		wantFail           bool
	}{
		{"SkipLocally", "", "", false},
		{"FailOnCI", "true", "", true},
		{"FailWhenRequired", "", "1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(pgtest.EnvBinDir, t.TempDir())
			t.Setenv(pgtest.EnvCI, tt.ci)
			t.Setenv(pgtest.EnvRequired, tt.required)
			rec := &recorder{TB: t}
			if c := pgtest.New(rec); c != nil {
				t.Fatal("New returned a cluster without binaries")
			}
			if got, want := rec.fatal != "", tt.wantFail; got != want {
				t.Errorf("failed = %v (%q), want %v", got, rec.fatal, want)
			}
			if got, want := rec.skip != "", !tt.wantFail; got != want {
				t.Errorf("skipped = %v (%q), want %v", got, rec.skip, want)
			}
		})
	}
}
