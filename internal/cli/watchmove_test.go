package cli

import (
	"net/http"
	"testing"
	"time"
)

// An action waiting for the watch loop while the loop moves the admin
// server to a new engine answers 503 at once: the old server's shutdown
// waits for the action's request, which would otherwise wait for the loop
// (the console was down 30 s and the action applied a minute late).
func TestActionWaitingWhenTheAdminServerMovesAnswers503(t *testing.T) {
	t.Parallel()
	w := &watcher{reqs: make(chan func()), quit: make(chan struct{})} // no loop reads reqs: it is reloading
	got := make(chan int, 1)
	go func() {
		code, _ := w.do(func() (int, error) { return http.StatusOK, nil })
		got <- code
	}()
	select {
	case code := <-got:
		t.Fatalf("answered %d before the server moved", code)
	case <-time.After(100 * time.Millisecond):
	}
	w.releaseHolder() // what the reload does before the new engine takes the address
	select {
	case code := <-got:
		if code != http.StatusServiceUnavailable {
			t.Fatalf("answered %d, want 503", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the action still waits for the loop after the server moved")
	}
	// A later action waits for the loop again.
	go func() {
		code, _ := w.do(func() (int, error) { return http.StatusOK, nil })
		got <- code
	}()
	(<-w.reqs)()
	if code := <-got; code != http.StatusOK {
		t.Fatalf("a later action answered %d, want 200", code)
	}
}
