package devstack

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// pgPort only names the socket file (.s.PGSQL.5432): the dev cluster
// listens on its unix socket in <dir>/pg/run and on no TCP port.
const pgPort = 5432

// findPGBin returns the directory holding initdb and postgres: PATH first,
// then the newest /usr/lib/postgresql/<v>/bin (Debian).
func findPGBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("devstack: PostgreSQL not found (no initdb on PATH or in /usr/lib/postgresql/*/bin); " +
		"install it: sudo apt-get install postgresql (scripts/dev does this when run as root)")
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// pgCluster is the dev stack's PostgreSQL cluster under <dir>/pg: data/,
// run/ (the socket) and postgres.log. As root, the server runs as the
// "postgres" OS account, which owns <dir>/pg.
type pgCluster struct {
	dir    string
	binDir string
	cred   *syscall.Credential
}

func newPGCluster(dir string) (*pgCluster, error) {
	binDir, err := findPGBin()
	if err != nil {
		return nil, err
	}
	c := &pgCluster{dir: dir, binDir: binDir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("devstack: running as root needs the OS account \"postgres\" to run the server (apt-get install postgresql creates it): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	return c, nil
}

func (c *pgCluster) dataDir() string   { return filepath.Join(c.dir, "data") }
func (c *pgCluster) socketDir() string { return filepath.Join(c.dir, "run") }
func (c *pgCluster) logPath() string   { return filepath.Join(c.dir, "postgres.log") }

// AdminURL is the superuser URL over the unix socket (trust authentication:
// only local OS users reach the socket directory).
func (c *pgCluster) AdminURL() string {
	q := url.Values{"host": {c.socketDir()}, "port": {strconv.Itoa(pgPort)}, "user": {"postgres"}, "sslmode": {"disable"}}
	return "postgres:///postgres?" + q.Encode()
}

// init creates the directories and, once, the cluster (initdb).
func (c *pgCluster) init() error {
	for _, d := range []string{c.dir, c.socketDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		if c.cred != nil {
			if err := os.Chown(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return fmt.Errorf("devstack: chown %s: %w", d, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); err == nil {
		return nil
	}
	cmd := exec.Command(filepath.Join(c.binDir, "initdb"), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "-D", c.dataDir())
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if c.cred != nil {
			hint = fmt.Sprintf("\n(the server runs as OS user postgres, which must be able to reach %s: every parent directory needs o+x)", c.dir)
		}
		return fmt.Errorf("devstack: initdb: %w\n%s%s", err, out, hint)
	}
	return nil
}

// service returns the postgres server process (not restarted: a dead
// database stops the stack with an error).
func (c *pgCluster) service(s *service) *service {
	s.name = "postgres"
	s.bin = filepath.Join(c.binDir, "postgres")
	s.args = []string{"-D", c.dataDir(), "-k", c.socketDir(), "-p", strconv.Itoa(pgPort),
		"-c", "listen_addresses=", "-c", "max_connections=200", "-c", "password_encryption=scram-sha-256"}
	s.env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	s.logPath = c.logPath()
	s.restart = false
	s.stopSig = syscall.SIGINT // fast shutdown
	s.cred = c.cred
	return s
}

// ping connects once as the superuser.
func (c *pgCluster) ping(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.AdminURL())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
