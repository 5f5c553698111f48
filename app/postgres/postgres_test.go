package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"stagesub.dev/app"
	"stagesub.dev/app/postgres"
	"stagesub.dev/app/schema"
	"stagesub.dev/app/schema/schematest"
	"stagesub.dev/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// MustDB returns the services on a fresh tenant database and a context
// acting as its admin.
func MustDB(tb testing.TB) (*postgres.DB, context.Context) {
	tb.Helper()
	c := pgtest.Start(tb)
	url := schematest.NewDB(tb, c, "goteborg")
	ctx := context.Background()
	if _, err := schema.CreateStaffAdmin(ctx, schematest.MustOpen(tb, url), "admin@example.org", "admin-password"); err != nil {
		tb.Fatal(err)
	}
	pool, err := postgres.Open(ctx, url, postgres.PoolOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	db := postgres.New(pool)
	u, err := db.Authenticate(ctx, "admin@example.org", "admin-password")
	if err != nil {
		tb.Fatal(err)
	}
	return db, app.WithUser(ctx, u)
}

func TestOpenPoolBounds(t *testing.T) {
	c := pgtest.Start(t)
	ctx := context.Background()
	pool, err := postgres.Open(ctx, schematest.NewDB(t, c, ""), postgres.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := pool.Config()
	if cfg.MaxConns != 4 || cfg.MinConns != 0 || cfg.MaxConnIdleTime != time.Minute || cfg.MaxConnLifetime == 0 {
		t.Errorf("pool max %d min %d idle %v lifetime %v, want 4, 0, 1m, bounded", cfg.MaxConns, cfg.MinConns, cfg.MaxConnIdleTime, cfg.MaxConnLifetime)
	}
	var name string
	if err := pool.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&name); err != nil || name != "stagesub-app" {
		t.Errorf("application_name = %q, %v", name, err)
	}

	_, err = postgres.Open(ctx, "postgres://u:secretpw@127.0.0.1:1/x?connect_timeout=1", postgres.PoolOptions{})
	if err == nil {
		t.Fatal("Open on a closed port succeeded")
	}
	_, err = postgres.Open(ctx, "postgres://u:secretpw@host:notaport/x", postgres.PoolOptions{})
	if got, want := app.ErrorCode(err), app.EINVALID; got != want {
		t.Errorf("bad URL: code %q (%v), want %q", got, err, want)
	}
	if err != nil && strings.Contains(err.Error(), "secretpw") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	db, adminCtx := MustDB(t)
	viewer, err := db.CreateUser(adminCtx, app.UserInput{Email: "v@example.org", Password: "viewer-pass", Role: app.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	viewerCtx := app.WithUser(context.Background(), viewer)
	anon := context.Background()
	in := app.MusicianInput{Name: "A", Instrument: "b"}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"AnonRead", third(db.FindMusicians(anon, app.MusicianFilter{})), app.EUNAUTHORIZED},
		{"AnonWrite", second(db.CreateMusician(anon, in)), app.EUNAUTHORIZED},
		{"ViewerWrite", second(db.CreateMusician(viewerCtx, in)), app.EFORBIDDEN},
		{"ViewerProject", second(db.CreateProject(viewerCtx, app.ProjectInput{Name: "p", StartsOn: "2027-01-01", EndsOn: "2027-01-01"})), app.EFORBIDDEN},
		{"ViewerAddsUser", second(db.CreateUser(viewerCtx, app.UserInput{Email: "x@example.org", Password: "password1", Role: app.RoleAdmin})), app.EFORBIDDEN},
		{"DuplicateEmail", second(db.CreateUser(adminCtx, app.UserInput{Email: "V@example.org", Password: "password1", Role: app.RoleStaff})), app.ECONFLICT},
		{"ViewerTokenForAdmin", secondS(db.CreateAPIToken(viewerCtx, &app.User{ID: 1}, "x")), app.EFORBIDDEN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := app.ErrorCode(tt.err); got != tt.want {
				t.Errorf("code = %q (%v), want %q", got, tt.err, tt.want)
			}
		})
	}
}

func second[T any](_ T, err error) error       { return err }
func secondS(_ string, err error) error        { return err }
func third[T any](_ T, _ int, err error) error { return err }

// TestAnswerOnce: concurrent answers to one request: exactly one wins.
func TestAnswerOnce(t *testing.T) {
	db, ctx := MustDB(t)
	p, err := db.CreateProject(ctx, app.ProjectInput{Name: "Brahms", StartsOn: "2027-05-01", EndsOn: "2027-05-03"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := db.CreateMusician(ctx, app.MusicianInput{Name: "Anna", Instrument: "violin"})
	if err != nil {
		t.Fatal(err)
	}
	rq, err := db.CreateRequest(ctx, app.RequestInput{ProjectID: p.ID, MusicianID: m.ID, Position: "tutti"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rq.AnswerToken) != 43 {
		t.Errorf("token length %d, want 43 (256 bits)", len(rq.AnswerToken))
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = db.AnswerRequest(context.Background(), rq.AnswerToken, i%2 == 0)
		}()
	}
	wg.Wait()
	ok, conflicts := 0, 0
	for _, err := range errs {
		switch app.ErrorCode(err) {
		case "":
			ok++
		case app.ECONFLICT:
			conflicts++
		default:
			t.Errorf("answer: %v", err)
		}
	}
	if ok != 1 || conflicts != 5 {
		t.Errorf("answers: %d ok, %d conflicts; want 1 and 5", ok, conflicts)
	}
	for _, token := range []string{app.NewToken(), "short"} {
		if r, err := db.AnswerRequest(context.Background(), token, true); r != nil || app.ErrorCode(err) != app.ENOTFOUND {
			t.Errorf("answer with unknown token %q: %v, %v; want ENOTFOUND", token, r, err)
		}
	}
	// A deactivated musician cannot be asked again.
	if _, err := db.DeactivateMusician(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	p2, _ := db.CreateProject(ctx, app.ProjectInput{Name: "Mahler", StartsOn: "2027-06-01", EndsOn: "2027-06-01"})
	_, err = db.CreateRequest(ctx, app.RequestInput{ProjectID: p2.ID, MusicianID: m.ID, Position: "tutti"})
	if got, want := app.ErrorFields(err)["musician_id"], "musician is not active"; got != want {
		t.Errorf("request to inactive musician: %v, want field message %q", err, want)
	}
}

func TestSessionsAndTokens(t *testing.T) {
	db, ctx := MustDB(t)
	u := app.UserFromContext(ctx)
	s, err := db.CreateSession(ctx, u, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.FindSession(ctx, s.Token)
	if err != nil || got.User.ID != u.ID || got.CSRFToken != s.CSRFToken {
		t.Fatalf("FindSession = %+v, %v", got, err)
	}
	if _, err := db.FindSession(ctx, s.Token+"x"); app.ErrorCode(err) != app.EUNAUTHORIZED {
		t.Errorf("wrong token: %v, want unauthorized", err)
	}
	expired, err := db.CreateSession(ctx, u, -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.FindSession(ctx, expired.Token); app.ErrorCode(err) != app.EUNAUTHORIZED {
		t.Errorf("expired session: %v, want unauthorized", err)
	}
	if n, err := db.DeleteExpiredSessions(ctx); err != nil || n != 1 {
		t.Errorf("DeleteExpiredSessions = %d, %v; want 1", n, err)
	}
	if err := db.DeleteSession(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := db.FindSession(ctx, s.Token); app.ErrorCode(err) != app.EUNAUTHORIZED {
		t.Errorf("deleted session: %v, want unauthorized", err)
	}
	tok, err := db.CreateAPIToken(ctx, u, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.FindUserByAPIToken(ctx, tok); err != nil || got.ID != u.ID {
		t.Errorf("FindUserByAPIToken = %v, %v", got, err)
	}
	if _, err := db.Authenticate(ctx, "nobody@example.org", "whatever1"); app.ErrorCode(err) != app.EUNAUTHORIZED {
		t.Errorf("unknown email: %v, want unauthorized", err)
	}
}

func TestStatsViewFollowsWrites(t *testing.T) {
	db, ctx := MustDB(t)
	m, _ := db.CreateMusician(ctx, app.MusicianInput{Name: "Anna", Instrument: "violin"})
	db.CreateMusician(ctx, app.MusicianInput{Name: "Erik", Instrument: "cello"})
	p, _ := db.CreateProject(ctx, app.ProjectInput{Name: "Brahms", StartsOn: "2027-05-01", EndsOn: "2027-05-03"})
	if _, err := db.CreateRequest(ctx, app.RequestInput{ProjectID: p.ID, MusicianID: m.ID, Position: "tutti"}); err != nil {
		t.Fatal(err)
	}
	db.DeactivateMusician(ctx, m.ID)
	d, err := db.Dashboard(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.ActiveMusicians != 1 || d.PendingRequests != 1 || len(d.UpcomingProjects) != 1 || len(d.Recent) == 0 {
		t.Errorf("dashboard = %+v, want 1 active musician, 1 pending, 1 upcoming, activity", d)
	}
	if d.Recent[0].Action != "musician.deactivate" || d.Recent[0].Actor != "admin@example.org" {
		t.Errorf("latest activity = %+v, want musician.deactivate by admin@example.org", d.Recent[0])
	}
}
