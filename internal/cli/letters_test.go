package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A dead letter holds a whole row, whatever its length: the admin API's
// listing reads letters past the 64 MiB a line scanner stopped at, and
// the letters after them.
func TestReadLettersOfAnyLength(t *testing.T) {
	big := `{"row":"` + strings.Repeat("x", 65<<20) + `"}`
	path := filepath.Join(t.TempDir(), "F.jsonl")
	body := `{"row":1}` + "\n" + big + "\n\n" + "not json\n" + `{"row":3}` // the last line unterminated
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	letters, n, bad, err := readLetters(path, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(letters) != 2 || string(letters[0]) != big || string(letters[1]) != `{"row":3}` {
		t.Fatalf("got %d letters, %d listed (first %d bytes), want 3 and the big one and row 3", n, len(letters), len(letters[0]))
	}
	if len(bad) != 1 || bad[0].Line != 4 || bad[0].Text != "not json" {
		t.Fatalf("bad lines %+v, want line 4", bad)
	}
}
