-- Supplementary group tables: every dataset with a social-group field, groups with >= 30
-- unique questions and a single (comma-free) label; U->B minus B->U > 0 means the group is
-- treated worse after quantization.
{{ group_asymmetry(ref('stg_paired_responses'), ['dataset_group', 'method_label', '"group"'], 30) }}
