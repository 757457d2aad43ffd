package main

import (
	"bytes"
	"context"
	"testing"
)

func TestQuickstart(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	want := "stu_id: 101, avg_score: 90\nstu_id: 102, avg_score: 76.67\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
