// Package pgtest runs throwaway PostgreSQL clusters for tests.
//
// A cluster is a real postgres server started from initdb in a temporary
// directory, listening on a unix socket in a short path (fsync off), and
// optionally on 127.0.0.1 with scram-sha-256 password authentication. When
// the test process runs as root the server runs as the "postgres" OS account
// (initdb and postgres refuse to run as root) and the directory is chowned to
// it.
//
// One cluster per test package: call Main from TestMain and Start from each
// test; every test then gets a fresh database from CreateDB, cloned from a
// template prepared once with Template:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		c := pgtest.Start(t)
//		tmpl := c.Template(t, "tmpl_app", func(ctx context.Context, url string) error { ... migrate ... })
//		_, url := c.CreateDB(t, tmpl)
//	}
//
// Tests that stop the server ("database down") start a private cluster with
// New, so they do not disturb the others.
//
// Missing binaries make Start and New skip the test, unless CI=true or
// PGTEST_REQUIRED=1, in which case they fail it. PGTEST_NOCLEANUP=1 keeps the
// cluster directories (the server is still stopped).
package pgtest

import (
	"stagesub.dev/internal/needbin"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables read by this package.
const (
	EnvRequired  = "PGTEST_REQUIRED"  // "1": missing binaries fail the test
	EnvNoCleanup = "PGTEST_NOCLEANUP" // non-empty: keep cluster directories
	EnvCI        = "CI"               // "true": like PGTEST_REQUIRED=1
	EnvBinDir    = "PGTEST_BINDIR"    // directory holding initdb and postgres
)

// Superuser is the name of the cluster's superuser.
const Superuser = "postgres"

// Option configures a cluster.
type Option func(*options)

type options struct {
	tcp bool
}

// WithTCP makes the cluster also listen on 127.0.0.1 on a free port, where
// every role must authenticate with scram-sha-256 (pg_hba "host all all
// 127.0.0.1/32 scram-sha-256"). The unix socket stays "trust". Use it for
// tests of role isolation and passwords.
func WithTCP() Option { return func(o *options) { o.tcp = true } }

// Cluster is one running (or stopped) throwaway PostgreSQL server. Its
// methods are safe for concurrent use. A Cluster must not be copied.
type Cluster struct {
	dir     string // root temp dir: data/, log, and the socket
	binDir  string
	port    int // TCP port when tcp, else 5432 (only names the socket)
	tcp     bool
	cred    *syscall.Credential
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd exits
	tmplMu sync.Mutex
	tmpls  map[string]*template
}

type template struct {
	once sync.Once
	err  error
}

var (
	mainMu     sync.Mutex
	mainActive bool
	shared     *Cluster
	sharedErr  error
)

// Main runs the tests of a package and stops the package's shared cluster
// (if a test started one) afterwards, even when tests failed. It does not
// return: it exits with m.Run's code.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with more cleanup to do:
//
//	func TestMain(m *testing.M) {
//		code := pgtest.Run(m)
//		cleanup()
//		os.Exit(code)
//	}
func Run(m *testing.M) int {
	mainMu.Lock()
	mainActive = true
	mainMu.Unlock()
	code := m.Run()
	mainMu.Lock()
	c := shared
	shared, sharedErr = nil, nil
	mainActive = false
	mainMu.Unlock()
	if c != nil {
		if err := c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// Start returns the package's shared cluster, starting it on first use.
// Without Main in TestMain it starts a private cluster for tb (as New).
// Options apply to the first call that starts the shared cluster; a later
// call asking for TCP when the cluster has none fails tb.
func Start(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	mainMu.Lock()
	if !mainActive {
		mainMu.Unlock()
		return New(tb, opts...)
	}
	defer mainMu.Unlock()
	o := collect(opts)
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start(o)
	}
	if sharedErr != nil {
		failOrSkip(tb, sharedErr)
		return nil
	}
	if o.tcp && !shared.tcp {
		tb.Fatalf("pgtest: the shared cluster was started without TCP; pass pgtest.WithTCP() to every Start, or use pgtest.New")
	}
	return shared
}

// New starts a private cluster that is closed when tb ends.
func New(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	c, err := start(collect(opts))
	if err != nil {
		failOrSkip(tb, err)
		return nil
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// ErrNoBinaries is returned (wrapped) when initdb or postgres is missing.
var ErrNoBinaries = errors.New("pgtest: PostgreSQL binaries (initdb, postgres) not found")

// Required reports whether missing binaries must fail tests: CI=true or
// PGTEST_REQUIRED=1 (see package needbin).
func Required() bool { return needbin.Required() }

func failOrSkip(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrNoBinaries) {
		needbin.Missing(tb, err.Error()+" (apt-get install postgresql)")
		return
	}
	tb.Fatalf("%v", err)
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// BinDir returns the directory that holds initdb and postgres: $PGTEST_BINDIR,
// the directory of initdb on PATH, else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		if hasBinaries(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w in %s=%s", ErrNoBinaries, EnvBinDir, d)
	}
	if p, err := exec.LookPath("initdb"); err == nil && hasBinaries(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if hasBinaries(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w on PATH or in /usr/lib/postgresql/*/bin", ErrNoBinaries)
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func hasBinaries(dir string) bool {
	for _, b := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

// start creates and starts a cluster; on error nothing is left running.
func start(o options) (*Cluster, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	// The socket path must stay under 107 bytes: use /tmp, not a long TMPDIR.
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgt")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{dir: dir, binDir: binDir, port: 5432, tcp: o.tcp, logPath: filepath.Join(dir, "log"), tmpls: map[string]*template{}}
	if err := c.init(); err != nil {
		c.removeDir()
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if o.tcp {
			if c.port, err = freePort(); err != nil {
				c.removeDir()
				return nil, err
			}
		}
		err = c.Start()
		if err == nil {
			return c, nil
		}
		if !o.tcp || attempt == 2 {
			c.removeDir()
			return nil, err
		}
	}
}

func (c *Cluster) init() error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgtest: running as root needs an OS account \"postgres\" to run the server: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return fmt.Errorf("pgtest: chown %s: %w", c.dir, err)
		}
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.binDir, "initdb"), "--no-sync", "-U", Superuser, "-A", "trust",
		"-E", "UTF8", "--locale=C", "-D", c.dataDir())
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	if c.tcp {
		hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
		if err := os.WriteFile(filepath.Join(c.dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if c.cred != nil {
			if err := os.Chown(filepath.Join(c.dataDir(), "pg_hba.conf"), int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return fmt.Errorf("pgtest: %w", err)
			}
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// Dir returns the cluster's temporary directory (data/, log, socket).
func (c *Cluster) Dir() string { return c.dir }

// SocketDir returns the directory of the server's unix socket.
func (c *Cluster) SocketDir() string { return c.dir }

// Port returns the server port: the TCP port with WithTCP, else 5432, which
// then only names the unix socket file.
func (c *Cluster) Port() int { return c.port }

// TCPAddr returns "127.0.0.1:PORT", or "" without WithTCP.
func (c *Cluster) TCPAddr() string {
	if !c.tcp {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
}

// URL returns a postgres:// URL for db as the superuser over the unix socket.
func (c *Cluster) URL(db string) string {
	q := url.Values{"host": {c.dir}, "port": {strconv.Itoa(c.port)}, "user": {Superuser}, "sslmode": {"disable"}}
	return "postgres:///" + url.PathEscape(db) + "?" + q.Encode()
}

// AdminURL returns the superuser URL of database "postgres".
func (c *Cluster) AdminURL() string { return c.URL("postgres") }

// RoleURL returns a URL for db as role with password over the unix socket
// (trust: the password is not checked there).
func (c *Cluster) RoleURL(role, password, db string) string {
	q := url.Values{"host": {c.dir}, "port": {strconv.Itoa(c.port)}, "sslmode": {"disable"}}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// TCPURL returns a URL for db as role with password over 127.0.0.1, where
// the password is checked (scram-sha-256). It panics without WithTCP.
func (c *Cluster) TCPURL(role, password, db string) string {
	if !c.tcp {
		panic("pgtest: TCPURL on a cluster started without WithTCP")
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Host: c.TCPAddr(), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Log returns the server log so far (for failure messages).
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections. It is a no-op when the server runs.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	listen := ""
	if c.tcp {
		listen = "127.0.0.1"
	}
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"),
		"-D", c.dataDir(),
		"-k", c.dir,
		"-p", strconv.Itoa(c.port),
		"-c", "listen_addresses="+listen,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB",
		"-c", "password_encryption=scram-sha-256",
	)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: if the test binary dies without cleanup (panic, timeout
	// kill), the postmaster does an immediate shutdown instead of leaking.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	c.cmd, c.exited = cmd, exited

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, c.AdminURL())
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			c.cmd = nil
			return fmt.Errorf("pgtest: postgres exited during start-up: %s", tail(c.Log(), 2000))
		case <-ctx.Done():
			c.killLocked()
			return fmt.Errorf("pgtest: postgres not ready after 30s: %v\n%s", err, tail(c.Log(), 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops the server with a fast shutdown (open connections are
// terminated). It is a no-op when the server is stopped. Start brings it back
// with the same data, socket and port.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.killLocked()
		return errors.New("pgtest: postgres did not stop within 20s; killed")
	}
	c.cmd = nil
	return nil
}

func (c *Cluster) killLocked() {
	if c.cmd == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.exited
	c.cmd = nil
}

// Close stops the server and removes the directory unless PGTEST_NOCLEANUP
// is set.
func (c *Cluster) Close() error {
	err := c.Stop()
	if os.Getenv(EnvNoCleanup) != "" {
		fmt.Fprintf(os.Stderr, "pgtest: %s=1: keeping %s\n", EnvNoCleanup, c.dir)
		return err
	}
	c.removeDir()
	return err
}

func (c *Cluster) removeDir() { _ = os.RemoveAll(c.dir) }

// Exec runs sql as the superuser in database db.
func (c *Cluster) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		return fmt.Errorf("pgtest: connect %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: %s: %w", firstLine(sql), err)
	}
	return nil
}

// Template creates database name once per cluster and runs setup on it
// (e.g. migrations) with a superuser URL; later calls return name at once.
// setup must close its connections, so the database can be cloned. When
// setup fails, tb fails, and so does every later call for that name.
func (c *Cluster) Template(tb testing.TB, name string, setup func(ctx context.Context, url string) error) string {
	tb.Helper()
	c.tmplMu.Lock()
	t := c.tmpls[name]
	if t == nil {
		t = &template{}
		c.tmpls[name] = t
	}
	c.tmplMu.Unlock()
	t.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.err = c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); t.err != nil {
			return
		}
		if setup != nil {
			if err := setup(ctx, c.URL(name)); err != nil {
				t.err = fmt.Errorf("pgtest: template %s: %w", name, err)
			}
		}
	})
	if t.err != nil {
		tb.Fatalf("%v", t.err)
	}
	return name
}

// CreateDB creates a fresh database named t_<random> cloned from template
// ("" = template1) and returns its name and superuser URL. It is dropped when
// tb ends (kept with PGTEST_NOCLEANUP).
func (c *Cluster) CreateDB(tb testing.TB, template string) (name, url string) {
	tb.Helper()
	if template == "" {
		template = "template1"
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name = "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{template}.Sanitize())
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if os.Getenv(EnvNoCleanup) != "" {
			return
		}
		c.mu.Lock()
		down := c.cmd == nil
		c.mu.Unlock()
		if down {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Logf("pgtest: %v", err)
		}
	})
	return name, c.URL(name)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}
