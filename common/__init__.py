"""Shared helpers for the energy-based-models course.

Each module is about one thing:

- ``config``         -- the lesson's ``Config`` dataclass becomes command-line flags, with validation
                        (torch-free, so ``--help`` answers before the heavy imports);
- ``lesson``         -- one run of a lesson: seed, per-section generators, device, output folder,
                        figures, ``metrics.json``, and the divergence guard;
- ``plotting``       -- one look for every figure (the course style): landscapes, samples, vector
                        fields, grids, GIFs;
- ``datasets``       -- 2-D toy targets with exact log-densities, and image data (8x8 digits, MNIST);
- ``samplers``       -- continuous MCMC: Langevin (unadjusted, Metropolis-adjusted, underdamped,
                        annealed) and the replay buffer;
- ``diagnostics``    -- autocorrelation, ESS, split R-hat, self-transition rate, TV, MMD, AUROC;
- ``boltzmann``      -- binary units: the energy -1/2 s^T W s - b^T s, single-site Gibbs and Metropolis
                        sweeps, the one bit enumerator (exact log Z and probabilities), bars-and-stripes,
                        spin glasses, simulated annealing, learning by enumeration;
- ``hopfield``       -- Hopfield networks: storage rules, recall dynamics, Glauber sweeps, modern
                        (dense) Hopfield energy and update;
- ``rbm``            -- the restricted Boltzmann machine: free energies F(v) and F(h), conditionals,
                        CD-k/PCD training, exact log Z, AIS;
- ``score_matching`` -- explicit, implicit, sliced and denoising score matching, Tweedie denoising;
- ``nets``           -- small neural energies, noise-conditional scores and classifiers (lessons 07-10);
- ``training``       -- the one guarded training loop (Adam, schedule, clipping, EMA, restarts), the EBM
                        loss and its negative samples;
- ``evaluation``     -- grid-normalised NLL and its floor, MMD floor, Fréchet distance in a classifier's
                        features, calibration error, FPR at 95 % TPR, PSNR;
- ``sampler_theory`` -- closed forms for the samplers on a quadratic: stationary variances, contraction
                        factors, exact autocorrelation and IAT (lesson 07);
- ``divergences``    -- KL by quadrature and the Donsker-Varadhan bound from samples (lesson 08);
- ``composition``    -- AND/OR/NOT of energies and their grid-normalised densities (lesson 09);
- ``adversarial``    -- PGD, BPDA and EOT for evaluating a defence honestly (lesson 09);
- ``flows``          -- RealNVP with affine couplings (lesson 10);
- ``nce``            -- the noise-contrastive estimation loss with a free log-normaliser (lesson 10);
- ``diffusion``      -- the noise ladder, epsilon-prediction, the probability-flow ODE and its likelihood
                        (lesson 10).

Importing ``common`` (or any of its modules) has no side effects: nothing is seeded, downloaded,
plotted or written until a lesson calls a function.
"""
