package stream_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/kisflow-go/kisflow/stream"
)

func TestMarksKeepTheCauseAndTheText(t *testing.T) {
	t.Parallel()
	cause := fmt.Errorf("insert: %w", io.ErrUnexpectedEOF)
	for _, tc := range []struct {
		name             string
		err              error
		permanent, fatal bool
	}{
		{"plain", cause, false, false},
		{"permanent", stream.Permanent(cause), true, false},
		{"fatal", stream.Fatal(cause), false, true},
		{"wrapped permanent", fmt.Errorf("sink db: %w", stream.Permanent(cause)), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stream.IsPermanent(tc.err); got != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", got, tc.permanent)
			}
			if got := stream.IsFatal(tc.err); got != tc.fatal {
				t.Errorf("IsFatal = %v, want %v", got, tc.fatal)
			}
			if !errors.Is(tc.err, io.ErrUnexpectedEOF) {
				t.Error("the cause is lost")
			}
		})
	}
	if stream.Permanent(nil) != nil || stream.Fatal(nil) != nil {
		t.Error("marking nil must give nil")
	}
	if got := stream.Permanent(cause).Error(); got != cause.Error() {
		t.Errorf("text %q, want %q", got, cause.Error())
	}
}
