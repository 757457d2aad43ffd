package kisflow

// CheckSourceMust makes f check its first function's source.must, as the
// instances of a Job do, so that tests can run the check through Run.
func CheckSourceMust(f Flow) { f.(*flow).checkMust = true }
