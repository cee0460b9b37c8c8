"""MemHunter: dataset-level memorization detection with a memory-inducing prompter.

Wu, Lou, Zheng, Chen, *MemHunter: Automated and Verifiable Memorization Detection at
Dataset-scale in LLMs* (arXiv 2412.07261, 2024), reconstructed from its abstract (no code was
published):

* :mod:`~jaxtrust.privacy.memhunter.memorization` — LCS, longest common substring, ROUGE-L of
  outputs against references, batched;
* :mod:`~jaxtrust.privacy.memhunter.prompter` — the memory-inducing prompter trained in rounds
  of rejection sampling, and the per-text MemHunter score;
* :mod:`~jaxtrust.privacy.memhunter.testing` — the dataset-level one-sided Welch t-test and
  Mann–Whitney test with a decision at alpha;
* :mod:`~jaxtrust.privacy.memhunter.dataset_inference` — the Dataset Inference baseline (Maini
  et al., 2024): MIA features, a learned linear combination, a t-test on held-out halves;
* :mod:`~jaxtrust.privacy.memhunter.gcg` — per-sample GCG-style prompt optimisation (baseline,
  and the search MemHunter's prompts initialise in plug-in mode);
* :mod:`~jaxtrust.privacy.memhunter.world` — the test bed of ``jaxtrust reproduce memhunter``
  (stdlib passages, planted members, in-house targets and controls).

Per-sample LM membership scores (loss, zlib, Min-K%, Min-K%++) live in
:mod:`jaxtrust.privacy.mia`.
"""

from jaxtrust.privacy.memhunter.dataset_inference import (
    DatasetInferenceResult,
    dataset_inference,
    fit_logistic,
)
from jaxtrust.privacy.memhunter.gcg import GCGTrace, gcg_search, reference_loss
from jaxtrust.privacy.memhunter.memorization import MemorizationScores, memorization_scores
from jaxtrust.privacy.memhunter.prompter import (
    MemHunterScores,
    PrompterConfig,
    PrompterTrace,
    check_tokenizers,
    continuation_scores,
    init_prompter,
    memhunter_scores,
    respond,
    sample_prompts,
    seed_pairs,
    sft_pool,
    train_prompter,
)
from jaxtrust.privacy.memhunter.testing import (
    TESTS,
    DatasetTest,
    check_alpha,
    dataset_test,
    welch_t,
)

__all__ = [
    "TESTS",
    "DatasetInferenceResult",
    "DatasetTest",
    "GCGTrace",
    "MemHunterScores",
    "MemorizationScores",
    "PrompterConfig",
    "PrompterTrace",
    "check_alpha",
    "check_tokenizers",
    "continuation_scores",
    "dataset_inference",
    "dataset_test",
    "fit_logistic",
    "init_prompter",
    "gcg_search",
    "memhunter_scores",
    "memorization_scores",
    "reference_loss",
    "respond",
    "sample_prompts",
    "seed_pairs",
    "sft_pool",
    "train_prompter",
    "welch_t",
]
