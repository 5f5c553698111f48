package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"stagesub.dev/internal/needbin"
)

// chromiumHome returns a HOME for Chromium whose NSS database
// ($HOME/.pki/nssdb) trusts the router's internal CA and nothing else
// besides the system roots: Chromium then verifies the router's
// certificates fully (chain, names, dates), exactly as it would on a
// developer's machine that imported the CA.
func (s *system) chromiumHome(t *testing.T) string {
	t.Helper()
	certutil := needbin.Path(t, "certutil", "apt-get install libnss3-tools")
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + db, "--empty-password"},
		{"-A", "-d", "sql:" + db, "-t", "C,,", "-n", "stagesub-dev-ca", "-i", s.caFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	return home
}

// browserErrors collects console errors, uncaught exceptions and error log
// entries of a page.
type browserErrors struct {
	mu   sync.Mutex
	errs []string
}

func (b *browserErrors) add(s string) {
	b.mu.Lock()
	b.errs = append(b.errs, s)
	b.mu.Unlock()
}

func (b *browserErrors) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errs
	b.errs = nil
	return e
}

// testBrowser: headless Chromium logs into a tenant app and into the admin
// dashboard through the router over TLS, trusting the internal CA (and
// ignoring no certificate error), with no console errors, and saves
// screenshots.
func (s *system) testBrowser(t *testing.T, chromium string) {
	_, port, _ := net.SplitHostPort(s.httpsAddr)
	home := s.chromiumHome(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Env("HOME=" + home),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Every name resolves to loopback; nothing leaves the machine.
		chromedp.Flag("host-resolver-rules", "MAP * 127.0.0.1"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	errs := &browserErrors{}
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value))
				}
				errs.add("console." + string(ev.Type) + ": " + strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			errs.add(fmt.Sprintf("exception: %s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				errs.add(fmt.Sprintf("log %s: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("chromium: Runtime.enable: %v", err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("chromium: Log.enable: %v", err)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			// A page still being laid out (a busy machine) has no size yet
			// and Chromium refuses with "0 width": wait for layout, bounded.
			var buf []byte
			var err error
			for try := 0; try < 25; try++ {
				buf, err = chromedp.FullScreenshot(100)(ctx, tg) // quality 100: PNG
				if err == nil || !strings.Contains(err.Error(), "0 width") {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(s.art, name), buf, 0o644)
		})
	}
	checkErrors := func(t *testing.T, page string) {
		t.Helper()
		for _, e := range errs.take() {
			t.Errorf("%s: browser error: %s", page, e)
		}
	}
	// state reads where the browser is and what it shows.
	state := func(t *testing.T) (loc, title, text string) {
		t.Helper()
		var err error
		if loc, err = chromedp.Run(ctx, chromedp.Location()); err != nil {
			t.Fatal(err)
		}
		if title, err = chromedp.Run(ctx, chromedp.Title()); err != nil {
			t.Fatal(err)
		}
		if text, err = chromedp.Run(ctx, chromedp.Text("body")); err != nil {
			t.Fatal(err)
		}
		return loc, title, text
	}

	t.Run("TenantLogin", func(t *testing.T) {
		base := "https://goteborg.localhost:" + port
		creds := s.staff["goteborg"]
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/login"),
			chromedp.WaitVisible(`input[name="email"]`),
			shot("browser-tenant-login.png"),
			chromedp.SendKeys(`input[name="email"]`, creds[0]),
			chromedp.SendKeys(`input[name="password"]`, creds[1]),
			chromedp.Submit(`input[name="password"]`),
			chromedp.WaitNotPresent(`input[name="password"]`),
			chromedp.WaitReady("body"),
			shot("browser-tenant-dashboard.png"),
		)
		if err != nil {
			t.Fatalf("tenant login in chromium: %v", err)
		}
		loc, title, text := state(t)
		if strings.Contains(loc, "/login") {
			t.Errorf("still on the login page after logging in: %s", loc)
		}
		if !strings.Contains(text, "goteborg") && !strings.Contains(text, "Göteborgs Symfoniker") {
			t.Errorf("dashboard (title %q) does not name the tenant", title)
		}
		err = chromedp.Do(ctx,
			chromedp.Navigate(base+"/musicians"),
			chromedp.WaitReady("body"),
			shot("browser-tenant-musicians.png"),
		)
		if err != nil {
			t.Fatalf("musicians page in chromium: %v", err)
		}
		if _, _, text := state(t); !strings.Contains(text, "Isolde Göteborgsdotter") {
			t.Errorf("musicians page does not list the musician created in Isolation")
		}
		checkErrors(t, "tenant")
	})

	t.Run("AdminLogin", func(t *testing.T) {
		base := "https://admin.localhost:" + port
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/login"),
			chromedp.WaitVisible(`#user`),
			shot("browser-admin-login.png"),
			chromedp.SendKeys(`#user`, s.adminUser),
			chromedp.SendKeys(`#password`, s.adminPassword),
			chromedp.Submit(`#password`),
			chromedp.WaitNotPresent(`#password`),
			chromedp.WaitReady("body"),
			shot("browser-admin-dashboard.png"),
		)
		if err != nil {
			t.Fatalf("admin login in chromium: %v", err)
		}
		loc, _, text := state(t)
		if strings.Contains(loc, "/login") {
			t.Errorf("still on the login page: %s", loc)
		}
		for _, tn := range tenants {
			if !strings.Contains(text, tn.Slug) && !strings.Contains(text, tn.Name) {
				t.Errorf("admin dashboard does not list tenant %s", tn.Slug)
			}
		}
		checkErrors(t, "admin")
	})
}
