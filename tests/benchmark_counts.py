"""Row counts of the real benchmark files per dataset, as the datasets README states them
(written out from the README, not from the code under test)."""

README_ROWS = {
    "BBQ": 11_956, "BiasLens-Choices": 10_917, "CEB-Adult": 1_000, "CEB-Credit": 1_000, "CEB-Jigsaw": 1_500,
    "CEB-Recognition-S": 800, "CEB-Recognition-T": 800, "IAT": 1_444, "StereoSet-Intersentence": 2_123,
    "SocialStigmaQA": 0, "BiasLens-GenWhy": 10_972, "CEB-Continuation-S": 400, "CEB-Continuation-T": 400,
    "CEB-Conversation-S": 400, "CEB-Conversation-T": 400, "FMT10K-IM-S": 1_400, "FMT10K-IM-T": 255,
}  # fmt: skip
