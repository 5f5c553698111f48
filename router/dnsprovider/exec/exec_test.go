package exec_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/libdns/libdns"

	"stagesub.dev/router/acme/acmetest"
	"stagesub.dev/router/dnsprovider/exec"
)

func TestNsupdateScript(t *testing.T) {
	t.Parallel()
	n := acmetest.StartNamed(t, acmetest.NamedConfig{Zones: []acmetest.Zone{{Name: "stagesub.test"}}})
	script := acmetest.NsupdateScript(t, n)
	p := &exec.Provider{Command: script}
	ctx := context.Background()
	rec := libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "token-1"}

	got, err := p.AppendRecords(ctx, "stagesub.test.", []libdns.Record{rec})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].RR().Name != rec.Name || got[0].RR().Data != rec.Data {
		t.Errorf("AppendRecords returned %+v, want the record unchanged", got)
	}
	if got, want := n.TXT(t, "_acme-challenge.stagesub.test"), []string{"token-1"}; !slices.Equal(got, want) {
		t.Errorf("TXT after present = %q, want %q", got, want)
	}
	if _, err := p.DeleteRecords(ctx, "stagesub.test", []libdns.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if got := n.TXT(t, "_acme-challenge.stagesub.test"); len(got) != 0 {
		t.Errorf("TXT after cleanup = %q, want none", got)
	}
	want := "present _acme-challenge.stagesub.test. token-1 zone=stagesub.test. name=_acme-challenge ttl=60\n" +
		"cleanup _acme-challenge.stagesub.test. token-1 zone=stagesub.test. name=_acme-challenge ttl=60\n"
	if got := acmetest.ScriptCalls(t, script); got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	failing := filepath.Join(dir, "fail.sh")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'api says no' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "v"}
	tests := []struct {
		name     string
		p        *exec.Provider
		rec      libdns.Record
		contains string
	}{
		{"ErrExitStatus", &exec.Provider{Command: failing}, rec, "api says no"},
		{"ErrNoCommand", &exec.Provider{}, rec, "command is required"},
		{"ErrMissingCommand", &exec.Provider{Command: filepath.Join(dir, "nope")}, rec, "nope"},
		{"ErrNotTXT", &exec.Provider{Command: failing}, libdns.RR{Type: "A", Name: "x", Data: "127.0.0.1"}, "only TXT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.p.AppendRecords(context.Background(), "stagesub.test.", []libdns.Record{tt.rec})
			if err == nil {
				t.Fatal("AppendRecords succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}
