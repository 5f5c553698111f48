package pgbouncer_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"stagesub.dev/deploy/pgbouncer"
	"stagesub.dev/deploy/postgres"
	"stagesub.dev/internal/needbin"
	"stagesub.dev/internal/pgtest"
	"stagesub.dev/internal/testbin"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestUserlist(t *testing.T) {
	got, err := pgbouncer.Userlist(map[string]string{
		"orchestra_malmo":    "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy",
		"orchestra_goteborg": "SCRAM-SHA-256$4096:c2FsdA==$b2V5:c2VydmVy",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `"orchestra_goteborg" "SCRAM-SHA-256$4096:c2FsdA==$b2V5:c2VydmVy"` + "\n" +
		`"orchestra_malmo" "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy"` + "\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	t.Run("ErrNotSCRAM", func(t *testing.T) {
		if _, err := pgbouncer.Userlist(map[string]string{"r": "md5abc"}); err == nil {
			t.Error("no error")
		}
	})
}

// TestConfigWithRealPgBouncer runs pgbouncer with pgbouncer.ini (addresses
// and paths templated) in front of a real Postgres with two tenant
// databases, and checks that tenants connect with their own passwords, in
// transaction pooling, concurrently, and not with a wrong password or to
// another tenant's database.
func TestConfigWithRealPgBouncer(t *testing.T) {
	bin := needbin.Path(t, "pgbouncer", "apt-get install pgbouncer")
	pg := pgtest.Start(t, pgtest.WithTCP())
	ctx := context.Background()
	verifiers := map[string]string{}
	passwords := map[string]string{}
	for _, slug := range []string{"goteborg", "malmo"} {
		role := "orchestra_" + slug
		pw := "pw-" + slug + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		v, err := postgres.ScramVerifier(pw)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", role, v),
			fmt.Sprintf("CREATE DATABASE %s OWNER %s", role, role),
			fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", role),
		} {
			if err := pg.Exec(ctx, "postgres", q); err != nil {
				t.Fatal(err)
			}
		}
		verifiers[role], passwords[role] = v, pw
	}

	// Not t.TempDir: its parent is private to root, and pgbouncer runs as
	// the postgres account.
	dir, err := os.MkdirTemp("", "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	userlist, err := pgbouncer.Userlist(verifiers)
	if err != nil {
		t.Fatal(err)
	}
	port := testbin.FreePort(t)
	r := strings.NewReplacer(
		"host=db1.internal port=5432", "host=127.0.0.1 port="+strconv.Itoa(pg.Port()),
		"listen_port = 6432", "listen_port = "+strconv.Itoa(port),
		"/etc/pgbouncer/userlist.txt", filepath.Join(dir, "userlist.txt"),
		"/var/log/postgresql/pgbouncer.log", filepath.Join(dir, "pgbouncer.log"),
		"/var/run/postgresql/pgbouncer.pid", filepath.Join(dir, "pgbouncer.pid"),
	)
	ini := r.Replace(pgbouncer.Config)
	if strings.Contains(ini, "db1.internal") || strings.Contains(ini, "/etc/") {
		t.Fatalf("templating left production addresses in:\n%s", ini)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": userlist} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // immediate shutdown
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	logTail := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		return out.String() + string(b)
	}

	dsn := func(role, pw, db string) string {
		return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable&default_query_exec_mode=exec", role, pw, port, db)
	}
	open := func(role, pw, dbname string) (*sql.DB, error) {
		db, err := sql.Open("pgx", dsn(role, pw, dbname))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, err
		}
		return db, nil
	}
	var db *sql.DB
	deadline := time.Now().Add(15 * time.Second)
	for {
		db, err = open("orchestra_goteborg", passwords["orchestra_goteborg"], "orchestra_goteborg")
		if err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("pgbouncer exited:\n%s", logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect through pgbouncer: %v\n%s", err, logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer db.Close()

	t.Run("TransactionPooling", func(t *testing.T) {
		if _, err := db.ExecContext(ctx, "CREATE TABLE musicians (id serial PRIMARY KEY, name text NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(20) // more clients than default_pool_size server connections
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for w := 0; w < 20; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						errs <- err
						return
					}
					var id int
					if err := tx.QueryRowContext(ctx, "INSERT INTO musicians (name) VALUES ($1) RETURNING id", fmt.Sprintf("m-%d-%d", w, i)).Scan(&id); err != nil {
						tx.Rollback()
						errs <- err
						return
					}
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM musicians WHERE name LIKE $1", "m-%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 200 {
			t.Errorf("count = %d, want 200", n)
		}
	})
	t.Run("ErrWrongPassword", func(t *testing.T) {
		if db, err := open("orchestra_goteborg", "wrong-password", "orchestra_goteborg"); err == nil {
			db.Close()
			t.Error("wrong password accepted")
		}
	})
	t.Run("ErrOtherTenantDatabase", func(t *testing.T) {
		if db, err := open("orchestra_malmo", passwords["orchestra_malmo"], "orchestra_goteborg"); err == nil {
			db.Close()
			t.Error("malmo's role connected to goteborg's database")
		}
	})
	t.Run("OtherTenant", func(t *testing.T) {
		db, err := open("orchestra_malmo", passwords["orchestra_malmo"], "orchestra_malmo")
		if err != nil {
			t.Fatalf("malmo through pgbouncer: %v\n%s", err, logTail())
		}
		db.Close()
	})
}
