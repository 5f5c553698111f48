// Package systemdunits holds StageSub's systemd units, embedded so
// stagesubctl's systemd deploy target can install them:
//
//   - stagesub-router.service: the edge router (binds :80/:443 with
//     CAP_NET_BIND_SERVICE as a dynamic user)
//   - stagesub-admin.service: the superadmin dashboard
//   - stagesub-app@.service: one instance per tenant, stagesub-app@<slug>,
//     with EnvironmentFile /etc/stagesub/tenants/<slug>.env
//
// Every unit runs as a DynamicUser with a strict sandbox (ProtectSystem=strict,
// no capabilities but the router's bind, a @system-service syscall filter).
// The tests run `systemd-analyze verify` on them.
package systemdunits

import (
	"embed"
	"io/fs"
)

//go:embed *.service
var files embed.FS

// Names lists the unit files.
var Names = []string{"stagesub-admin.service", "stagesub-app@.service", "stagesub-router.service"}

// FS returns the unit files.
func FS() fs.FS { return files }

// Unit returns the text of the named unit file.
func Unit(name string) ([]byte, error) { return files.ReadFile(name) }
