package acmetest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// NsupdateScript writes an executable shell script for the exec DNS provider
// (stagesub.dev/router/dnsprovider/exec) that adds or deletes the TXT record
// with nsupdate (Debian package bind9-dnsutils) against n, signed with n's
// TSIG key, and appends each call to calls.log beside it. It returns the
// script's path.
func NsupdateScript(tb testing.TB, n *Named) string {
	tb.Helper()
	nsupdate := LookPath(tb, "nsupdate")
	dir := tb.TempDir()
	path := filepath.Join(dir, "dns-hook.sh")
	_, port, _ := splitHostPort(n.Addr)
	script := fmt.Sprintf(`#!/bin/sh
# usage: dns-hook.sh present|cleanup FQDN VALUE
set -eu
case "$1" in
  present) op=add ;;
  cleanup) op=delete ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
echo "$1 $2 $3 zone=$STAGESUB_DNS_ZONE name=$STAGESUB_DNS_NAME ttl=$STAGESUB_DNS_TTL" >> %q
printf 'server 127.0.0.1 %%s\nzone %%s\nupdate %%s %%s %%s TXT "%%s"\nsend\n' \
  %s "$STAGESUB_DNS_ZONE" "$op" "$2" "$STAGESUB_DNS_TTL" "$3" | %s -y %q
`, filepath.Join(dir, "calls.log"), port, nsupdate, n.KeyAlg+":"+n.KeyName+":"+n.Secret)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// ScriptCalls returns the calls.log written by the script at path.
func ScriptCalls(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "calls.log"))
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	return string(b)
}
