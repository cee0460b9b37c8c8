"""The API reference's table of contents: every public name, grouped as optax groups its
transforms. ``conf.py`` writes one page per entry of :data:`PAGES` from it, and refuses to build
(an error, so ``-W`` or not the build fails) when a module's ``__all__`` has a name that no group
lists, or a group lists a name the module does not export."""

from __future__ import annotations

import importlib

# (page slug, page title, module, intro, [(group title, [names])])
PAGES: list[tuple[str, str, str, str, list[tuple[str, list[str]]]]] = [
    (
        "models",
        "Models",
        "jaxtrust.models",
        "Flax NNX models, loading and saving Hugging Face / GGUF checkpoints, generation.",
        [
            (
                "Causal language models",
                ["CausalLM", "LMConfig", "LMOutput", "KVCache", "ModelHooks"],
            ),
            ("Encoders and vision", ["TransformerEncoder", "EncoderConfig", "TextClassifier"]),
            ("Vision Transformer", ["ViT", "ViTConfig"]),
            (
                "Generation",
                ["generate", "generate_text", "generate_from_embeds", "GenerationOutput"],
            ),
            (
                "Checkpoints and tokenizers",
                [
                    "load_pretrained",
                    "save_pretrained",
                    "model_from_hf_tensors",
                    "hf_tensors_from_model",
                    "load_tokenizer",
                    "format_chat",
                ],
            ),
        ],
    ),
    (
        "training",
        "Training",
        "jaxtrust.training",
        "Losses, the functional train step, fine-tuning, optimisers, memoised programs, "
        "checkpoints and sharding.",
        [
            (
                "Preference optimisation (DPO)",
                [
                    "preference_pool",
                    "reference_logprobs",
                    "pair_logprobs",
                    "make_dpo_loss",
                    "dpo_finetune",
                    "DPOResult",
                ],
            ),
            (
                "Losses",
                [
                    "lm_loss",
                    "lm_batch_loss",
                    "lm_loss_fn",
                    "lm_marginal_loss",
                    "dpo_loss",
                    "token_logprobs",
                    "sequence_logprobs",
                    "prompt_loss_mask",
                ],
            ),
            (
                "Train and eval steps",
                [
                    "TrainState",
                    "init_train_state",
                    "merge_model",
                    "make_train_step",
                    "make_eval_step",
                    "fit",
                    "evaluate",
                    "BATCH_KEYS",
                    "check_batch",
                ],
            ),
            (
                "Fine-tuning",
                ["finetune", "FinetuneResult", "epoch_batches", "pool_size", "scan_optimize"],
            ),
            (
                "Optimisers and schedules",
                ["adamw_cosine", "warmup_cosine", "find_learning_rate"],
            ),
            ("Memoised programs", ["memoize", "memo_size", "clear_memo"]),
            ("Checkpoints", ["Checkpointer", "save_pytree", "load_pytree", "abstract_like"]),
            ("Sharding", ["make_mesh", "fsdp_rules", "shard_params", "shard_batch"]),
        ],
    ),
    (
        "eval",
        "Evaluation",
        "jaxtrust.eval",
        "Responses to prompt sets, perplexity, judges and the statistics every report uses.",
        [
            ("Responses", ["generate_responses", "Responses", "special_ids"]),
            ("Likelihood", ["sequence_nll", "row_nll", "perplexity", "lm_metrics"]),
            (
                "Refusal judges",
                [
                    "is_refusal",
                    "refusal_rate",
                    "is_opener_refusal",
                    "opener_refusal_rate",
                    "over_refusal_rate",
                    "harmful_score",
                    "safety_report",
                ],
            ),
            (
                "Keyword and exact-match judges",
                [
                    "REFUSAL_KEYWORDS",
                    "is_jailbroken",
                    "keyword_refusal_rate",
                    "keyword_attack_success_rate",
                    "exact_match_accuracy",
                ],
            ),
            (
                "Statistics",
                ["MeanSE", "mean_se", "proportion_se", "claim_count", "seed_summary"],
            ),
        ],
    ),
    (
        "data",
        "Data",
        "jaxtrust.data",
        "Tokenizers, collation and the generated worlds.",
        [
            ("Tokenizers and batches", ["WordTokenizer", "SPECIAL_TOKENS", "Batch", "collate"]),
            ("Worlds", ["ArithmeticWorld", "Example", "SafetyWorld", "REFUSALS"]),
            ("Fine-tuning attacks", ["FINETUNE_ATTACKS"]),
        ],
    ),
    (
        "zoo",
        "Model zoo",
        "jaxtrust.zoo",
        "In-house fixture models, built once and kept in sealed, checksummed cache entries.",
        [
            ("Models", ["ZooConfig", "ZooModel", "base_model", "aligned_model"]),
            ("Evaluation", ["respond", "evaluate_model", "safety_summary"]),
            (
                "Cache",
                ["cached_entry", "CachedEntry", "cache_key", "default_cache_dir", "FORMAT_VERSION"],
            ),
        ],
    ),
    (
        "fhe",
        "FHE backend",
        "jaxtrust.fhe",
        "Fully homomorphic encryption behind SecPE: the encrypted argmax and verbalizer, "
        "quantization, and the environments the backends run in.",
        [
            (
                "Encrypted computations",
                [
                    "encrypted_ensemble_argmax",
                    "EncryptedEnsembleResult",
                    "encrypted_verbalizer",
                    "EncryptedVerbalizerResult",
                    "encrypted_max_smoke",
                ],
            ),
            (
                "Argmax variants",
                [
                    "ARGMAX_VARIANTS",
                    "DEFAULT_ARGMAX_VARIANT",
                    "NAIVE_ARGMAX_VARIANT",
                    "STRUCTURES",
                    "STRATEGIES",
                    "parse_variant",
                    "is_exact",
                    "argmax_grid",
                    "plaintext_argmax",
                ],
            ),
            ("Quantization", ["QuantSpec", "quantize_scores"]),
            (
                "Backends and environments",
                [
                    "FHE",
                    "CKKS",
                    "environment_status",
                    "find_python",
                    "EnvironmentNotFoundError",
                    "concrete_available",
                    "concrete_versions",
                    "require_concrete",
                    "ConcreteUnavailableError",
                ],
            ),
        ],
    ),
    (
        "spf",
        "Safety-preserving fine-tuning (SPF)",
        "jaxtrust.safety.spf",
        "The SPF optax transform, its subspace estimators and projections, the geometry "
        "measurements and the baselines. Guide: :doc:`/papers/spf`.",
        [
            ("The transform", ["spf", "SPFState", "selected_matrices"]),
            (
                "Projection rules",
                ["project", "project_conflict", "project_pcgrad", "project_null", "project_block"],
            ),
            (
                "Subspace bases",
                [
                    "SubspaceBasis",
                    "compute_basis",
                    "choose_basis_method",
                    "basis_svd",
                    "basis_gram",
                    "basis_randomized",
                    "basis_from_factors",
                    "top_singular_vectors",
                    "subspace_coefficients",
                ],
            ),
            (
                "Geometry measurements",
                [
                    "spectrum_table",
                    "effective_rank",
                    "explained_ratio_curve",
                    "rank_for_ratio",
                    "gradient_cosine",
                    "subspace_overlap",
                    "random_subspace_overlap",
                    "basis_overlap_table",
                    "matrices",
                    "path_name",
                ],
            ),
            ("Baselines", ["random_subspace", "pcgrad_full", "safe_lora_project"]),
        ],
    ),
    (
        "recovery",
        "One-shot safety recovery",
        "jaxtrust.safety.recovery",
        "Patch a fine-tuned model with a single refusal example. Guide: :doc:`/papers/oneshot`.",
        [("Recovery", ["recover", "RecoveryResult", "SELECTIONS"])],
    ),
    (
        "actapprox",
        "Activation approximations (audit and QuadA)",
        "jaxtrust.safety.actapprox",
        "Approximation techniques as model hooks, the safety audit sweep, and QuadA. "
        "Guide: :doc:`/papers/actapprox`.",
        [
            (
                "Techniques",
                [
                    "Technique",
                    "technique",
                    "parse_technique",
                    "technique_label",
                    "TECHNIQUES",
                    "KNOWN_TECHNIQUES",
                    "FAMILIES",
                    "REFERENCES",
                    "GaussianNoise",
                    "LaplaceNoise",
                    "Polynomial",
                    "POLYNOMIALS",
                    "SmoothQuant",
                    "OmniQuant",
                    "Teal",
                    "Cats",
                ],
            ),
            (
                "Hooks and sites",
                [
                    "approx_hooks",
                    "ApproxHooks",
                    "HookedLM",
                    "SITES",
                    "NOISE_SITES",
                    "LINEAR_INPUT_SITES",
                    "calibrate",
                    "record_activations",
                    "ActivationRecord",
                    "pooled_prompt_activations",
                ],
            ),
            (
                "Approximation error",
                [
                    "approximation_error",
                    "polynomial_error",
                    "quantization_error",
                    "STATED_MAX_ERROR",
                    "exact_activation",
                    "exp_approx",
                    "softmax_approx",
                    "composite_sign",
                    "fake_quantize",
                    "smoothing_scales",
                    "outlier_activations",
                    "FrozenArray",
                ],
            ),
            (
                "The audit",
                ["sweep_claims", "SweepClaims", "first_crossing", "mva_sigma"],
            ),
            (
                "QuadA",
                [
                    "quada_align",
                    "QuadAConfig",
                    "QuadAResult",
                    "make_quada_loss",
                    "quada_noise",
                    "activation_cluster_loss",
                ],
            ),
        ],
    ),
    (
        "secpe",
        "SecPE: private prompt ensembles",
        "jaxtrust.privacy.secpe",
        "Prompt ensembles with a verbalizer, the soft vote, and the adversarial attack. "
        "Guide: :doc:`/papers/secpe`.",
        [
            (
                "Ensembles",
                [
                    "PromptEnsemble",
                    "Verbalizer",
                    "EncodedTexts",
                    "prompt_scores",
                    "SCORE_MODES",
                    "verbalizer_weights",
                ],
            ),
            ("Voting", ["soft_vote", "ensemble_argmax", "prompt_predictions"]),
            ("Robustness", ["attack", "AttackResult", "robust_accuracy"]),
        ],
    ),
    (
        "mia",
        "Membership inference",
        "jaxtrust.privacy.mia",
        "LiRA with vmapped shadow models, simple membership scores, and SalUn's SVC MIA-efficacy.",
        [
            (
                "Language-model membership scores",
                [
                    "lm_membership_scores",
                    "lm_features",
                    "token_statistics",
                    "TokenStats",
                    "LM_SCORES",
                ],
            ),
            (
                "Shadow models",
                [
                    "ShadowModels",
                    "train_shadow_models",
                    "balanced_in_masks",
                    "stacked_logits",
                    "predict_logits",
                ],
            ),
            (
                "LiRA",
                ["lira_scores", "lira_leave_one_out", "lira_evaluate", "logit_confidence"],
            ),
            ("Membership scores", ["membership_scores", "SCORES"]),
            ("ROC", ["roc_metrics", "ROCMetrics", "tpr_at_fpr"]),
            ("SVC MIA-efficacy", ["svc_mia_efficacy", "svc_mia_from_logits", "SVCMIAResult"]),
        ],
    ),
    (
        "unlearning",
        "Unlearning baselines, transforms and metrics",
        "jaxtrust.unlearning",
        "The standard unlearning baselines behind one interface, the update-mask transform, "
        "and the metrics.",
        [],
    ),
    (
        "mape",
        "MAPE-Unlearn",
        "jaxtrust.unlearning.mape",
        "Module-aware unlearning: heads and filters selected by their mask Fisher. "
        "Guide: :doc:`/papers/mape`.",
        [
            ("Unlearning", ["mape_unlearn", "MAPEConfig", "MAPEResult"]),
            (
                "Mask Fisher",
                [
                    "mask_gradients",
                    "MaskGradients",
                    "mask_fisher",
                    "MaskFisher",
                    "fisher_from_gradients",
                ],
            ),
            (
                "Module selection",
                [
                    "select_modules",
                    "select_modules_from_scores",
                    "block_objective",
                    "random_selection",
                    "ModuleSelection",
                ],
            ),
            (
                "Masks",
                ["module_shape", "ModuleShape", "parameter_mask", "module_mask_transform"],
            ),
        ],
    ),
    (
        "rsu",
        "RSU: risk-ordered sequential unlearning",
        "jaxtrust.unlearning.rsu",
        "Rank the forget set by privacy risk and unlearn it in stages. Guide: :doc:`/papers/rsu`.",
        [
            ("Unlearning", ["seq_unlearn", "RSUConfig", "RSUResult", "split_by_risk", "ORDERS"]),
            ("Risk scores", ["loss_risk", "lira_risk", "memorization_risk"]),
        ],
    ),
    (
        "multimodal",
        "Multimodal RAG substrate",
        "jaxtrust.multimodal",
        "The scene world, renderer, retriever, index, vision-language generator and the RAG "
        "service that AQUA watermarks.",
        [],
    ),
    (
        "aqua",
        "AQUA: watermarking image knowledge in multimodal RAG",
        "jaxtrust.multimodal.aqua",
        "Watermarks, verification, robustness transforms, stealth metrics and the adversarial "
        "baseline. Guide: :doc:`/papers/aqua`.",
        [],
    ),
    (
        "experiments",
        "Experiments",
        "jaxtrust.experiments",
        "The registry, run context and report writer behind ``jaxtrust reproduce``.",
        [
            (
                "Registry",
                ["register", "Experiment", "get_experiment", "list_experiments", "run_experiment"],
            ),
            ("Results", ["ExperimentResult", "Table", "RunContext"]),
            ("Helpers", ["check_config", "pyplot"]),
        ],
    ),
]

# Packages without a flat ``__all__``: one group per submodule (its ``__all__``), in this order.
SUBMODULE_GROUPS: dict[str, list[tuple[str, str]]] = {
    "jaxtrust.unlearning": [
        ("Baselines", "jaxtrust.unlearning.baselines"),
        ("Update masks", "jaxtrust.unlearning.transforms"),
        ("Metrics", "jaxtrust.unlearning.metrics"),
    ],
    "jaxtrust.multimodal": [
        ("Scene world", "jaxtrust.multimodal.world"),
        ("Rendering", "jaxtrust.multimodal.render"),
        ("Retriever", "jaxtrust.multimodal.retriever"),
        ("Inner-product index", "jaxtrust.multimodal.index"),
        ("Vision-language generator", "jaxtrust.multimodal.vlm"),
        ("RAG service", "jaxtrust.multimodal.rag"),
    ],
    "jaxtrust.multimodal.aqua": [
        ("Watermarks", "jaxtrust.multimodal.aqua.watermarks"),
        ("Verification", "jaxtrust.multimodal.aqua.verify"),
        ("Robustness transforms", "jaxtrust.multimodal.aqua.robustness"),
        ("Stealth and retrieval metrics", "jaxtrust.multimodal.aqua.metrics"),
        ("Adversarial baseline", "jaxtrust.multimodal.aqua.baselines"),
    ],
}


def exports(module_name: str) -> list[str]:
    """The ``__all__`` of ``module_name``."""
    return list(importlib.import_module(module_name).__all__)


def documented_modules() -> list[str]:
    """Every module whose ``__all__`` the reference documents."""
    out = []
    for _slug, _title, module_name, _intro, _groups in PAGES:
        out += [sub for _, sub in SUBMODULE_GROUPS.get(module_name, [])] or [module_name]
    return out


def problems() -> list[str]:
    """Names exported but not listed, listed twice, or listed but not exported."""
    found = []
    for _slug, _title, module_name, _intro, groups in PAGES:
        if module_name in SUBMODULE_GROUPS:
            if groups:
                found.append(f"{module_name}: has SUBMODULE_GROUPS, so its groups must be empty")
            continue
        listed = [n for _, names in groups for n in names]
        exported = exports(module_name)
        dup = sorted({n for n in listed if listed.count(n) > 1})
        missing = sorted(set(exported) - set(listed))
        extra = sorted(set(listed) - set(exported))
        for what, names in (
            ("listed twice", dup),
            ("not listed", missing),
            ("not exported", extra),
        ):
            if names:
                found.append(f"{module_name}: {what} in docs/api_groups.py: {names}")
    return found
