# metafor reference for benchmarks/kalaian1996.py (R >= 4 with metafor; Debian: apt install r-cran-metafor).
# Prints rma.mv fits of dat.kalaian1996 (REML and ML) and, below, the ML log-likelihood at fixed (tau2, rho).
library(metafor)
dat <- dat.kalaian1996

V <- vcalc(vi, cluster=dat$study, type=outcome, data=dat, rho=0.66)
for (m in c("REML", "ML")) {
  res <- rma.mv(yi, V, mods = ~ outcome - 1, random = ~ outcome | study, struct="UN", data=dat, method=m)
  cat(m, "\n")
  cat(sprintf("beta %s %.8f se %.8f\n", rownames(res$beta), res$beta, res$se), sep="")
  cat(sprintf("tau2 %s %.8f\n", res$g.levels.f[[1]], res$tau2), sep="")
  cat(sprintf("rho %.8f\n", res$rho))
  cat(sprintf("logLik %.8f\n", logLik(res)))
  cat(sprintf("k %d studies %d\n", res$k, length(unique(dat$study))))
}
res <- rma.mv(yi, V, mods = ~ outcome - 1, random = ~ outcome | study, struct="UN", data=dat, method="ML",
              tau2=c(0.01, 0.004), rho=0.3)
cat("fixed tau2 = (0.01, 0.004), rho = 0.3, ML\n")
cat(sprintf("beta %s %.10f\n", rownames(res$beta), res$beta), sep="")
cat(sprintf("logLik %.10f\n", logLik(res)))
