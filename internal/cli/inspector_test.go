package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// pageText is the text of the element sel. The page draws its figures
// anew every second, so the node a query found may be gone when its text
// is asked for ("No node with given id found"): the query is made again.
func pageText(ctx context.Context, sel chromedp.CSS) (string, error) {
	for try := 0; ; try++ {
		text, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err == nil || try == 20 || !strings.Contains(err.Error(), "No node with given id") {
			return text, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chromium returns Debian's chromium, skipping the test when it is
// missing unless KISFLOW_INTEGRATION is set (.ci/run installs it).
func chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("KISFLOW_INTEGRATION") != "" {
		t.Fatal("chromium is missing (apt-get install -y chromium); KISFLOW_INTEGRATION is set, so the inspector's browser test must run")
	}
	t.Skip("chromium is missing (apt-get install -y chromium)")
	return ""
}

// browser starts a headless chromium with the flags that work in CI.
func browser(t testing.TB) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// TestInspectorInBrowser loads the web inspector of a running kisflow run
// in chromium (the token given as #token=), checks that its numbers move,
// clicks stop on flow Gen and checks through the API that Gen stopped
// while Other runs on. The screenshot goes to docs/inspector.png with
// KISFLOW_UPDATE_SCREENSHOT=1, else into the test's temporary folder.
func TestInspectorInBrowser(t *testing.T) {
	ctx := browser(t)
	dir, base := adminDir(t, 200)
	gateFile := filepath.Join(dir, "gate-closed")
	if err := os.WriteFile(gateFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, done := childWith(t, dir, "KISFLOW_ADMIN_TOKEN=s3cret", "KISFLOW_TEST_GATE="+gateFile)
	api := apiClient{t: t, base: base, token: "s3cret"}
	waitAPI(t, api, done)

	committed := chromedp.CSS(`section[data-flow="Gen"] [data-stat="committed"] b`)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(base+"/#token=s3cret")); err != nil {
		t.Fatalf("load the inspector: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitVisible(committed)); err != nil {
		t.Fatalf("the inspector shows no flow Gen: %v", err)
	}
	first, err := pageText(ctx, (committed))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		time.Sleep(time.Second)
		later, err := pageText(ctx, (committed))
		if err != nil {
			t.Fatal(err)
		}
		if later != first && later != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the committed count of Gen did not move on the page: %q then %q", first, later)
		}
	}
	// Each step's node has its own figures: rows into Keep move, Gate
	// shows its errors (the gated rows).
	keepRows := chromedp.CSS(`section[data-flow="Gen"] [data-step="Keep"] [data-stat="step-rows"] b`)
	gateErrors := chromedp.CSS(`section[data-flow="Gen"] [data-step="Gate"] [data-stat="step-errors"] b`)
	firstRows, err := pageText(ctx, (keepRows))
	if err != nil {
		t.Fatalf("no step Keep on the page: %v", err)
	}
	waitFor(t, "the rows into step Keep to move on the page, and Gate's errors to show", 20*time.Second, func() bool {
		rows, err := pageText(ctx, (keepRows))
		if err != nil {
			t.Fatal(err)
		}
		errs, err := pageText(ctx, (gateErrors))
		if err != nil {
			t.Fatal(err)
		}
		return rows != firstRows && errs != "0"
	})
	// A moment more: the dead letters and the rate show in the picture.
	time.Sleep(1500 * time.Millisecond)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "inspector.png")
	if os.Getenv("KISFLOW_UPDATE_SCREENSHOT") == "1" {
		shot = filepath.Join("..", "..", "docs", "inspector.png")
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)

	// Stop Gen from the page.
	if _, err := chromedp.Run(ctx, chromedp.Click(chromedp.CSS(`section[data-flow="Gen"] button[data-action="stop"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "flow Gen to stop after the click", 20*time.Second, func() bool { return api.flow("Gen").Status == "stopped" })
	if f := api.flow("Other"); f.Status != "running" {
		t.Fatalf("Other is %s after Gen's stop, want running", f.Status)
	}
	badge := chromedp.CSS(`section[data-flow="Gen"] [data-status]`)
	waitFor(t, "the page to show Gen stopped", 10*time.Second, func() bool {
		status, err := pageText(ctx, (badge))
		if err != nil {
			t.Fatal(err)
		}
		return status == "stopped"
	})
}
