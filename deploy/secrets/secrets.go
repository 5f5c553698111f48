// Package secrets is the env-file secrets sink: one file <dir>/<slug>.env
// per tenant, KEY=value lines, mode 0600, replaced atomically. systemd's
// EnvironmentFile= and the local target read the same files.
package secrets

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Dir stores env files in Path. The zero value is not usable.
type Dir struct {
	Path string
}

// File returns the env file of slug.
func (d Dir) File(slug string) string { return filepath.Join(d.Path, slug+".env") }

// Read parses the env file of slug; the error wraps fs.ErrNotExist when
// there is none.
func (d Dir) Read(slug string) (map[string]string, error) {
	return ReadFile(d.File(slug))
}

// Write replaces the env file of slug with env (keys sorted) atomically: a
// temporary file in the same directory, mode 0600, fsynced, renamed. The
// directory is created with mode 0700 when missing.
func (d Dir) Write(slug string, env map[string]string) error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString("# written by stagesubctl; holds credentials, keep mode 0600\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !validKey(k) {
			return fmt.Errorf("secrets: invalid env key %q", k)
		}
		fmt.Fprintf(&buf, "%s=%s\n", k, quote(env[k]))
	}
	f, err := os.CreateTemp(d.Path, "."+slug+".env.*")
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("secrets: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("secrets: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("secrets: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Rename(tmp, d.File(slug)); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// Remove deletes the env file of slug; nil when there is none.
func (d Dir) Remove(slug string) error {
	if err := os.Remove(d.File(slug)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("secrets: %w", err)
	}
	return nil
}

// ReadFile parses an env file.
func ReadFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	env, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s: %w", path, err)
	}
	return env, nil
}

// Parse reads KEY=value lines as systemd's EnvironmentFile does for the
// subset Write produces: blank lines and lines starting with '#' are
// ignored; a value may be double-quoted with Go escapes.
func Parse(r io.Reader) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !validKey(k) {
			return nil, fmt.Errorf("line %d: not KEY=value", n)
		}
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			u, err := strconv.Unquote(v)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad quoted value", n)
			}
			v = u
		}
		env[k] = v
	}
	return env, sc.Err()
}

// Environ returns env as sorted "K=V" entries.
func Environ(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// quote leaves plain values (URLs, slugs) bare and double-quotes the rest.
func quote(v string) string {
	for _, c := range v {
		if c <= ' ' || c == '"' || c == '\'' || c == '\\' || c == '$' || c == '`' || c == '#' || c > '~' {
			return strconv.Quote(v)
		}
	}
	return v
}
