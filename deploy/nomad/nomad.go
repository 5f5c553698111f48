// Package nomad renders StageSub's Nomad jobs with the structs of
// github.com/hashicorp/nomad/api, so a job that does not type-check does not
// build:
//
//   - RouterJob: stagesub-router as a system job (one replica per client
//     node in the router pool) on static ports 80 and 443;
//   - AdminJob: stagesub-admin as a service job; its secrets come from the
//     Nomad Variable at AdminVariablePath;
//   - AppJob: one service job per tenant, "stagesub-app-<slug>", rendered by
//     stagesubctl. The tenant's DATABASE_URL comes from the Nomad Variable at
//     AppVariablePath(slug), which only that job can read (Nomad grants a
//     job's workload identity access to nomad/jobs/<job id>); it is rendered
//     into the task's environment by a template and never appears in the job.
//
// Every process registers itself in Consul (the jobs have no service
// blocks); the jobs hand each one its advertise address.
//
// JobJSON wraps a job as the body of `PUT /v1/jobs` and of
// `nomad job run -json`. The checked-in *.nomad.json files in this directory
// are JobJSON of the defaults (`go test ./nomad -update` rewrites them).
package nomad

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"

	"stagesub.dev/registry"
)

// Job IDs and Nomad Variable paths.
const (
	RouterJobID       = "stagesub-router"
	AdminJobID        = "stagesub-admin"
	AppJobPrefix      = "stagesub-app-"
	AdminVariablePath = "nomad/jobs/" + AdminJobID
)

// AppJobID returns the job ID of slug's app: "stagesub-app-<slug>".
func AppJobID(slug string) string { return AppJobPrefix + slug }

// AppVariablePath returns the Nomad Variable path holding slug's
// DATABASE_URL; the job AppJobID(slug) may read it, no other job may.
func AppVariablePath(slug string) string { return "nomad/jobs/" + AppJobID(slug) }

// Common holds what every job needs.
type Common struct {
	Region      string   // default "global"
	Datacenters []string // default ["dc1"]
	Namespace   string   // default "default"
	BinDir      string   // where the binaries are installed on clients; default /usr/local/bin
	BaseDomain  string   // STAGESUB_BASE_DOMAIN, required
	ConsulAddr  string   // CONSUL_HTTP_ADDR seen from a task; default "127.0.0.1:8500" (the node's agent)
	Version     string   // binary version, for job Meta
}

func (c *Common) defaults() error {
	if c.Region == "" {
		c.Region = "global"
	}
	if len(c.Datacenters) == 0 {
		c.Datacenters = []string{"dc1"}
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.BinDir == "" {
		c.BinDir = "/usr/local/bin"
	}
	if c.ConsulAddr == "" {
		c.ConsulAddr = "127.0.0.1:8500"
	}
	if c.BaseDomain == "" {
		return fmt.Errorf("nomad: base domain is required")
	}
	return nil
}

func (c *Common) job(j *api.Job) *api.Job {
	j.Datacenters = c.Datacenters
	j.Namespace = &c.Namespace
	j.Meta = map[string]string{"platform": "stagesub"}
	if c.Version != "" {
		j.Meta[registry.MetaVersion] = c.Version
	}
	return j
}

// env returns the environment every StageSub task gets.
func (c *Common) env() map[string]string {
	return map[string]string{
		registry.EnvConsulAddr: c.ConsulAddr,
		registry.EnvBaseDomain: c.BaseDomain,
		"STAGESUB_LOG_LEVEL":   "info",
	}
}

// RouterOptions configures RouterJob.
type RouterOptions struct {
	Common
	NodePool string // Nomad node pool of the edge nodes; default "default"
	// ExtraEnv is added to the task environment and overrides the defaults
	// (TLS mode acme with Consul storage; ACME e-mail, DNS provider ...).
	ExtraEnv map[string]string
}

// RouterJob returns the router system job: one instance per node of the
// pool, binding host ports 80 and 443; certificates are shared through
// Consul KV, so replicas are interchangeable.
func RouterJob(o RouterOptions) (*api.Job, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.NodePool == "" {
		o.NodePool = "default"
	}
	j := o.job(api.NewSystemJob(RouterJobID, RouterJobID, o.Region, 90))
	j.NodePool = &o.NodePool
	tg := api.NewTaskGroup("router", 1)
	tg.Networks = []*api.NetworkResource{{
		ReservedPorts: []api.Port{{Label: "http", Value: 80}, {Label: "https", Value: 443}},
		DynamicPorts:  []api.Port{{Label: "admin"}}, // /healthz and /metrics
	}}
	tg.Update = &api.UpdateStrategy{
		MaxParallel:     new(1),
		MinHealthyTime:  new(10 * time.Second),
		HealthyDeadline: new(2 * time.Minute),
		AutoRevert:      new(true),
	}
	env := o.env()
	env["STAGESUB_ROUTER_HTTP_ADDR"] = "0.0.0.0:${NOMAD_PORT_http}"
	env["STAGESUB_ROUTER_HTTPS_ADDR"] = "0.0.0.0:${NOMAD_PORT_https}"
	env["STAGESUB_ROUTER_ADMIN_ADDR"] = "0.0.0.0:${NOMAD_PORT_admin}"
	env["STAGESUB_ROUTER_ADVERTISE"] = "${NOMAD_IP_admin}"
	env["STAGESUB_STATE_DIR"] = "${NOMAD_TASK_DIR}/state"
	env["STAGESUB_TLS_MODE"] = "acme"
	env["STAGESUB_ACME_STORAGE"] = "consul"
	for k, v := range o.ExtraEnv {
		env[k] = v
	}
	t := api.NewTask("router", "exec").
		SetConfig("command", o.BinDir+"/stagesub-router").
		Require(&api.Resources{CPU: new(500), MemoryMB: new(256)})
	t.Env = env
	t.KillTimeout = new(30 * time.Second)
	// The Consul token of policy stagesub-router (deploy/consul-acl/router.hcl).
	t.Templates = []*api.Template{secretEnv(RouterJobID, []string{registry.EnvConsulToken})}
	tg.AddTask(t)
	j.AddTaskGroup(tg)
	return j, nil
}

// AdminOptions configures AdminJob.
type AdminOptions struct {
	Common
	Count     int    // default 1
	AdminUser string // STAGESUB_ADMIN_USER, default "admin"
}

// AdminJob returns the admin service job. The Variable at
// AdminVariablePath holds STAGESUB_ADMIN_PASSWORD_HASH,
// STAGESUB_STATS_PASSWORD, STAGESUB_SESSION_KEY and CONSUL_HTTP_TOKEN.
func AdminJob(o AdminOptions) (*api.Job, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Count <= 0 {
		o.Count = 1
	}
	if o.AdminUser == "" {
		o.AdminUser = "admin"
	}
	j := o.job(api.NewServiceJob(AdminJobID, AdminJobID, o.Region, 60))
	tg := api.NewTaskGroup("admin", o.Count)
	tg.Networks = []*api.NetworkResource{{DynamicPorts: []api.Port{{Label: "http"}}}}
	tg.RestartPolicy = restartPolicy()
	tg.EphemeralDisk = &api.EphemeralDisk{Sticky: new(true), Migrate: new(true), SizeMB: new(300)}
	env := o.env()
	env["STAGESUB_LISTEN"] = "0.0.0.0:${NOMAD_PORT_http}"
	env["STAGESUB_ADVERTISE"] = "${NOMAD_ADDR_http}"
	env["STAGESUB_ADMIN_USER"] = o.AdminUser
	// The last stats report survives task restarts (and, best effort, moves
	// with a replacement allocation on the same node: sticky disk), so a
	// restart does not re-query every tenant database.
	env["STAGESUB_ADMIN_STATE_FILE"] = "${NOMAD_ALLOC_DIR}/data/stats.json"
	t := api.NewTask("admin", "exec").
		SetConfig("command", o.BinDir+"/stagesub-admin").
		Require(&api.Resources{CPU: new(300), MemoryMB: new(256)})
	t.Env = env
	t.Templates = []*api.Template{secretEnv(AdminJobID, []string{
		"STAGESUB_ADMIN_PASSWORD_HASH", "STAGESUB_STATS_PASSWORD", "STAGESUB_SESSION_KEY", registry.EnvConsulToken,
	})}
	tg.AddTask(t)
	j.AddTaskGroup(tg)
	return j, nil
}

// AppOptions configures AppJob.
type AppOptions struct {
	Common
	Count    int // instances of the tenant's app; default 1
	CPU      int // MHz, default 200
	MemoryMB int // default 256
}

// AppJob returns the service job of tenant slug. DATABASE_URL (and the
// Consul token of policy stagesub-app) come from the Variable at
// AppVariablePath(slug); STAGESUB_TENANT is fixed in the job, so a Variable
// holding another tenant's URL makes the app refuse to start.
func AppJob(slug string, o AppOptions) (*api.Job, error) {
	if err := registry.ValidateSlug(slug); err != nil {
		return nil, fmt.Errorf("nomad: %w", err)
	}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Count <= 0 {
		o.Count = 1
	}
	if o.CPU <= 0 {
		o.CPU = 200
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = 256
	}
	id := AppJobID(slug)
	j := o.job(api.NewServiceJob(id, id, o.Region, 50))
	j.Meta[registry.MetaTenant] = slug
	tg := api.NewTaskGroup("app", o.Count)
	tg.Networks = []*api.NetworkResource{{DynamicPorts: []api.Port{{Label: "http"}}}}
	tg.RestartPolicy = restartPolicy()
	tg.Update = &api.UpdateStrategy{
		MaxParallel:     new(1),
		MinHealthyTime:  new(5 * time.Second),
		HealthyDeadline: new(2 * time.Minute),
		AutoRevert:      new(true),
	}
	// Spread a tenant's instances over nodes.
	tg.Spreads = []*api.Spread{{Attribute: "${node.unique.id}", Weight: new(int8(100))}}
	env := o.env()
	env[registry.EnvTenant] = slug
	env["STAGESUB_LISTEN"] = "0.0.0.0:${NOMAD_PORT_http}"
	env["STAGESUB_ADVERTISE"] = "${NOMAD_ADDR_http}"
	t := api.NewTask("app", "exec").
		SetConfig("command", o.BinDir+"/stagesub-app").
		Require(&api.Resources{CPU: new(o.CPU), MemoryMB: new(o.MemoryMB)})
	t.Env = env
	t.Meta = map[string]string{registry.MetaTenant: slug}
	t.KillTimeout = new(20 * time.Second)
	t.Templates = []*api.Template{secretEnv(id, []string{registry.EnvDatabaseURL, registry.EnvConsulToken})}
	tg.AddTask(t)
	j.AddTaskGroup(tg)
	return j, nil
}

// AppVariable returns the Nomad Variable that hands slug's app its
// database URL (and optionally its Consul token).
func AppVariable(slug, databaseURL, consulToken string) (*api.Variable, error) {
	if err := registry.ValidateSlug(slug); err != nil {
		return nil, fmt.Errorf("nomad: %w", err)
	}
	if databaseURL == "" {
		return nil, fmt.Errorf("nomad: tenant %s: empty database URL", slug)
	}
	items := api.VariableItems{registry.EnvDatabaseURL: databaseURL}
	if consulToken != "" {
		items[registry.EnvConsulToken] = consulToken
	}
	return &api.Variable{Namespace: "default", Path: AppVariablePath(slug), Items: items}, nil
}

// secretEnv renders keys of the job's own Nomad Variable into the task
// environment (the documented `{{ .KEY }}` form); a change restarts the task.
func secretEnv(jobID string, keys []string) *api.Template {
	tmpl := "{{ with nomadVar \"nomad/jobs/" + jobID + "\" }}\n"
	for _, k := range keys {
		tmpl += k + "={{ ." + k + " }}\n"
	}
	tmpl += "{{ end }}\n"
	return &api.Template{
		EmbeddedTmpl: &tmpl,
		DestPath:     new("secrets/stagesub.env"),
		Envvars:      new(true),
		ChangeMode:   new("restart"),
		Perms:        new("0600"),
	}
}

func restartPolicy() *api.RestartPolicy {
	return &api.RestartPolicy{
		Attempts: new(10),
		Interval: new(5 * time.Minute),
		Delay:    new(2 * time.Second),
		Mode:     new("delay"),
	}
}

// JobJSON returns {"Job": job} as indented JSON: the body of PUT /v1/jobs.
func JobJSON(j *api.Job) ([]byte, error) {
	b, err := json.MarshalIndent(api.JobRegisterRequest{Job: j}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("nomad: encode job %s: %w", *j.ID, err)
	}
	return append(b, '\n'), nil
}
