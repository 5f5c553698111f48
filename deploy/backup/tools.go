package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// DefaultBinDir is where Debian installs the PostgreSQL 15 client tools.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Tools runs Debian's pg_dump and pg_restore. The password of a URL never
// appears on a command line: it is passed in PGPASSWORD.
type Tools struct {
	// BinDir holds pg_dump and pg_restore; "" means DefaultBinDir when it
	// has them, else PATH.
	BinDir string
}

// Path returns the path of tool name.
func (t Tools) Path(name string) (string, error) {
	dir := t.BinDir
	if dir == "" {
		dir = DefaultBinDir
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p, nil
	}
	if t.BinDir == "" {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s or on PATH (install postgresql-client-15 or set STAGESUB_PG_BINDIR)", name, dir)
}

// versions caches `<tool> --version` by path.
var versions sync.Map

// Version returns the first line of `name --version`, "" on error. It runs
// the tool once per path and process.
func (t Tools) Version(ctx context.Context, name string) string {
	p, err := t.Path(name)
	if err != nil {
		return ""
	}
	if v, ok := versions.Load(p); ok {
		return v.(string)
	}
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return ""
	}
	v := strings.TrimSpace(string(out))
	versions.Store(p, v)
	return v
}

// Dump runs `pg_dump -Fc` on dbURL and writes the archive to w. snapshot,
// when set, is an exported snapshot to dump.
func (t Tools) Dump(ctx context.Context, dbURL, snapshot string, w io.Writer) error {
	args := []string{"--format=custom", "--no-password"}
	if snapshot != "" {
		args = append(args, "--snapshot="+snapshot)
	}
	return t.run(ctx, "pg_dump", dbURL, args, nil, w)
}

// Restore runs `pg_restore` of the custom-format archive read from r into
// dbURL, in one transaction, stopping at the first error. Objects are owned
// by the connecting role; privileges in the archive are not restored.
func (t Tools) Restore(ctx context.Context, dbURL string, r io.Reader) error {
	args := []string{"--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", "--no-password"}
	return t.run(ctx, "pg_restore", dbURL, args, r, io.Discard)
}

func (t Tools) run(ctx context.Context, name, dbURL string, args []string, stdin io.Reader, stdout io.Writer) error {
	p, err := t.Path(name)
	if err != nil {
		return err
	}
	conn, password, err := splitPassword(dbURL)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p, append(args, "--dbname="+conn)...)
	cmd.Stdin, cmd.Stdout = stdin, stdout
	stderr := &tailBuffer{max: 4096}
	cmd.Stderr = stderr
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	env = append(env, "PGCONNECT_TIMEOUT=10", "PGAPPNAME=stagesubctl-"+name)
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	cmd.Env = env
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		if msg != "" {
			return fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// splitPassword removes the password from a postgres:// URL.
func splitPassword(dbURL string) (conn, password string, err error) {
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", "", errors.New("database URL is not a postgres:// URL")
	}
	if u.User != nil {
		password, _ = u.User.Password()
		u.User = url.User(u.User.Username())
	}
	return u.String(), password, nil
}

// WithDatabase returns dbURL with its database name replaced by dbname.
func WithDatabase(dbURL, dbname string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("database URL is not a postgres:// URL")
	}
	u.Path = "/" + dbname
	u.RawPath = ""
	return u.String(), nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return t.b.String() }
