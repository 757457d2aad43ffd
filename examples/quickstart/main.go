// Command quickstart is KisFlow's quick start: student scores arrive as JSON
// strings, AvgStuScore (Calculate) computes each student's average and
// PrintStuAvgScore (Expand) prints it. The flow is read from conf/.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/kisflow-go/kisflow"
	"github.com/kisflow-go/kisflow/config"
)

//go:embed conf
var conf embed.FS

// StuScores is one student's scores, as the rows arrive.
type StuScores struct {
	StuID  int `json:"stu_id"`
	Score1 int `json:"score_1"`
	Score2 int `json:"score_2"`
	Score3 int `json:"score_3"`
}

// StuAvgScore is one student's average.
type StuAvgScore struct {
	StuID    int     `json:"stu_id"`
	AvgScore float64 `json:"avg_score"`
}

// AvgStuScore is a function in KisFlow's form; Register analyses it once.
func AvgStuScore(ctx context.Context, f kisflow.Flow, rows []*StuScores) error {
	for _, r := range rows {
		avg := float64(r.Score1+r.Score2+r.Score3) / 3
		if err := f.CommitRow(&StuAvgScore{StuID: r.StuID, AvgScore: avg}); err != nil {
			return err
		}
	}
	return nil
}

// printer returns PrintStuAvgScore writing to w.
func printer(w io.Writer) func(context.Context, kisflow.Flow, []*StuAvgScore) error {
	return func(ctx context.Context, f kisflow.Flow, rows []*StuAvgScore) error {
		for _, r := range rows {
			avg := strconv.FormatFloat(math.Round(r.AvgScore*100)/100, 'f', -1, 64)
			if _, err := fmt.Fprintf(w, "stu_id: %d, avg_score: %s\n", r.StuID, avg); err != nil {
				return err
			}
		}
		return nil
	}
}

func run(ctx context.Context, w io.Writer) error {
	reg := kisflow.NewRegistry()
	if err := reg.Register("AvgStuScore", AvgStuScore); err != nil {
		return err
	}
	if err := reg.Register("PrintStuAvgScore", kisflow.Func(printer(w))); err != nil {
		return err
	}
	set, err := config.ImportFS(conf, "conf")
	if err != nil {
		return err
	}
	eng, err := kisflow.NewEngine(reg, set)
	if err != nil {
		return err
	}
	defer eng.Close(ctx)

	fl, err := eng.Flow(ctx, "CalStuAvgScore")
	if err != nil {
		return err
	}
	_ = fl.CommitRow(`{"stu_id":101, "score_1":100, "score_2":90, "score_3":80}`)
	_ = fl.CommitRow(`{"stu_id":102, "score_1":100, "score_2":70, "score_3":60}`)
	res, err := fl.Run(ctx)
	if err != nil {
		return err
	}
	for _, re := range res.Rejected {
		fmt.Fprintln(w, "rejected:", re)
	}
	return nil
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}
