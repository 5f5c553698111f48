package secrets_test

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"stagesub.dev/deploy/secrets"
)

func TestWriteRead(t *testing.T) {
	d := secrets.Dir{Path: t.TempDir() + "/sub"}
	env := map[string]string{
		"DATABASE_URL":    "postgres://orchestra_x:pw@127.0.0.1:5432/orchestra_x?sslmode=disable",
		"STAGESUB_TENANT": "x",
		"ODD":             `a "quoted" $value with spaces # and ü`,
	}
	if err := d.Write("x", env); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.File("x"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o600); got != want {
		t.Errorf("mode = %v, want %v", got, want)
	}
	got, err := d.Read("x")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	b, _ := os.ReadFile(d.File("x"))
	if !strings.Contains(string(b), "\nDATABASE_URL=postgres://orchestra_x:pw@127.0.0.1:5432/orchestra_x?sslmode=disable\n") {
		t.Errorf("URL not written bare (systemd EnvironmentFile style):\n%s", b)
	}
	entries, _ := os.ReadDir(d.Path)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := d.Remove("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Read("x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read after Remove: %v, want fs.ErrNotExist", err)
	}
	if err := d.Remove("x"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		ok   bool
	}{
		{"A=1\n# c\n\nB = two \n", map[string]string{"A": "1", "B": "two"}, true},
		{`Q="x\"y"`, map[string]string{"Q": `x"y`}, true},
		{"no equals", nil, false},
		{"1A=x", nil, false},
	}
	for _, tt := range tests {
		got, err := secrets.Parse(strings.NewReader(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("Parse(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("Parse(%q)[%s] = %q, want %q", tt.in, k, got[k], v)
			}
		}
	}
	if err := (secrets.Dir{Path: t.TempDir()}).Write("x", map[string]string{"bad key": "v"}); err == nil {
		t.Errorf("Write accepted an invalid key")
	}
}
