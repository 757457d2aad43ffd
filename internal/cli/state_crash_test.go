package cli

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kisflow-go/kisflow"
)

// visits counts the rows of each user in the crash tests' child.
var visits = kisflow.NewValueState[int]("visits")

// countRow is a row of streamDir's file, with the count of its user.
type countRow struct {
	ID   int `json:"id"`
	User int `json:"user"`
	N    int `json:"n"`
}

// countState counts rows per user in keyed state and emits each row with
// its user's count so far.
func countState(ctx context.Context, f kisflow.Flow, rows []*countRow) error {
	for _, r := range rows {
		key := strconv.Itoa(r.User)
		n, _, err := visits.Get(f, key)
		if err != nil {
			return err
		}
		if err := visits.Set(f, key, n+1); err != nil {
			return err
		}
		if err := f.CommitRow(countRow{ID: r.ID, User: r.User, N: n + 1}); err != nil {
			return err
		}
	}
	return nil
}

// stateStreamDir is streamDir with the flow Flaky -> Slow -> CountState.
func stateStreamDir(t *testing.T, n int, delivery string) string {
	dir := streamDir(t, n, delivery)
	flow := strings.Replace(mustRead(t, filepath.Join(dir, "flow.yml")), "  - fname: Keep\n", "  - fname: CountState\n", 1)
	funcs := mustRead(t, filepath.Join(dir, "funcs.yml")) + "---\nkistype: func\nfname: CountState\nfmode: Calculate\n"
	conns := strings.Replace(mustRead(t, filepath.Join(dir, "conns.yml")), "  columns: id\n", "", 1)
	for name, data := range map[string]string{"flow.yml": flow, "funcs.yml": funcs, "conns.yml": conns} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkStateCounts checks, after the job over n rows (user id % 17)
// finished, the count of each user in the state kept in stateDB and the
// counts the rows carry: each count 1..N of a user comes with one id only
// (repeated rows of at-least-once carry the same count), and exactly once
// when exactly is set.
func checkStateCounts(t *testing.T, dir, stateDB string, n int, exactly bool) {
	t.Helper()
	want := map[int]int{}
	for i := 1; i <= n; i++ {
		want[i%17]++
	}
	db, err := sql.Open("sqlite", stateDB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT skey, value FROM kisflow_state WHERE name = 'visits'")
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		u, _ := strconv.Atoi(k)
		got[u], _ = strconv.Atoi(v)
	}
	rows.Close()
	for u, c := range want {
		if got[u] != c {
			t.Errorf("user %d: state %d, want %d", u, got[u], c)
		}
	}
	out, err := sql.Open("sqlite", filepath.Join(dir, "out.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var all, pairs, idsPerCount, distinctIDs int
	q := "SELECT count(*), count(DISTINCT user || '/' || n), (SELECT max(c) FROM (SELECT count(DISTINCT id) AS c FROM out GROUP BY user, n)), count(DISTINCT id) FROM out"
	if err := out.QueryRow(q).Scan(&all, &pairs, &idsPerCount, &distinctIDs); err != nil {
		t.Fatal(err)
	}
	if pairs != n || idsPerCount != 1 || distinctIDs != n {
		t.Fatalf("rows carry %d distinct counts for %d ids (%d ids at most per count), want %d each and 1", pairs, distinctIDs, idsPerCount, n)
	}
	if exactly && all != n {
		t.Fatalf("%d rows, want %d exactly", all, n)
	}
}

func TestKeyedStateExactlyOnceSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 4000
	dir := stateStreamDir(t, n, "exactly-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 8)
	if kills < 3 {
		t.Fatalf("only %d kills landed before the job finished; the test needs a longer job", kills)
	}
	checkStateCounts(t, dir, filepath.Join(dir, "out.db"), n, true)
	t.Logf("%d SIGKILLs: state and counts equal an uninterrupted run", kills)
}

func TestKeyedStateAtLeastOnceSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	t.Parallel()
	const n = 3000
	dir := stateStreamDir(t, n, "at-least-once")
	kills := killUntilDone(t, dir, syscall.SIGKILL, 5)
	if kills == 0 {
		t.Fatal("no SIGKILL landed before the job finished")
	}
	checkStateCounts(t, dir, filepath.Join(dir, "state", "checkpoints.db"), n, false)
	t.Logf("%d SIGKILLs: the state in the checkpoint store equals an uninterrupted run's", kills)
}
