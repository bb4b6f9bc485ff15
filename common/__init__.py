"""Shared helpers for the energy-based-models course.

Each module is about one thing:

- ``config``      -- the lesson's ``Config`` dataclass becomes command-line flags, with validation;
- ``lesson``      -- one run of a lesson: seed, device, output folder, figures, ``metrics.json``,
                     and the divergence guard;
- ``datasets``    -- 2-D toy targets with exact log-densities, and image data (8x8 digits, MNIST);
- ``samplers``    -- Langevin (unadjusted, Metropolis-adjusted, underdamped, annealed), Gibbs, replay buffer;
- ``diagnostics`` -- autocorrelation, ESS, split R-hat, MMD, exact enumeration, AUROC;
- ``rbm``         -- the restricted Boltzmann machine: free energy, conditionals, CD-k, exact log Z, AIS;
- ``plotting``    -- one look for every figure: landscapes, samples, vector fields, grids, GIFs;
- ``nets``        -- small neural energies, noise-conditional scores and classifiers (lessons 07-10);
- ``training``    -- the one guarded training loop (Adam, schedule, clipping, EMA, restarts), the EBM loss
                     and its negative samples;
- ``evaluation``  -- grid-normalised NLL and its floor, MMD floor, Fréchet distance in a classifier's features,
                     calibration error, FPR at 95 % TPR, PSNR.

Importing ``common`` (or any of its modules) has no side effects: nothing is seeded, downloaded,
plotted or written until a lesson calls a function.
"""
