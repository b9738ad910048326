from tortoise import migrations
from tortoise.migrations import operations as ops
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='ApiToken',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('name', fields.CharField(unique=True, max_length=64)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('prefix', fields.CharField(max_length=12)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_tokens', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A bearer token created with `python -m gateway tokens create`. Only its hash is kept.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Trade',
            fields=[
                ('trade_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ('netuid', fields.IntField()),
                ('hotkey', fields.CharField(max_length=64)),
                ('source', fields.CharField(max_length=16)),
                ('status', fields.CharField(default='requested', max_length=24)),
                ('reason', fields.TextField(null=True, unique=False)),
                ('request_id', fields.CharField(null=True, max_length=64)),
                ('requested_by', fields.CharField(null=True, max_length=64)),
                ('replay_of', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'trades', 'app': 'models', 'indexes': [Index(fields=['netuid', 'hotkey', 'created_at'])], 'pk_attr': 'trade_id', 'table_description': "One trade's journey. `trade_id` is the same in every event and record."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SentimentScore',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('trade', fields.OneToOneField('models.Trade', source_field='trade_id', db_constraint=True, to_field='trade_id', related_name='sentiment', on_delete=OnDelete.CASCADE)),
                ('netuid', fields.IntField()),
                ('score', fields.IntField(null=True)),
                ('backend', fields.CharField(max_length=16)),
                ('model', fields.CharField(null=True, max_length=128)),
                ('reason', fields.TextField(null=True, unique=False)),
                ('fallback_reason', fields.TextField(null=True, unique=False)),
                ('scored_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'sentiment_scores', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='StakeAction',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('trade', fields.OneToOneField('models.Trade', source_field='trade_id', db_constraint=True, to_field='trade_id', related_name='stake_action', on_delete=OnDelete.CASCADE)),
                ('netuid', fields.IntField()),
                ('hotkey', fields.CharField(max_length=64)),
                ('coldkey', fields.CharField(null=True, max_length=64)),
                ('direction', fields.CharField(max_length=8)),
                ('status', fields.CharField(max_length=16)),
                ('reason', fields.TextField(null=True, unique=False)),
                ('score', fields.IntField(null=True)),
                ('amount_tao', fields.DecimalField(null=True, max_digits=20, decimal_places=9)),
                ('amount_alpha', fields.DecimalField(null=True, max_digits=20, decimal_places=9)),
                ('success', fields.BooleanField(null=True)),
                ('message', fields.TextField(null=True, unique=False)),
                ('error_name', fields.CharField(null=True, max_length=64)),
                ('extrinsic_hash', fields.CharField(null=True, max_length=80)),
                ('block_hash', fields.CharField(null=True, max_length=80)),
                ('block', fields.IntField(null=True)),
                ('fee_rao', fields.BigIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'stake_actions', 'app': 'models', 'indexes': [Index(fields=['netuid', 'hotkey']), Index(fields=['status', 'direction'])], 'pk_attr': 'id', 'table_description': "The stake stage's decision and its chain result, unique per trade (idempotency)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TweetBatch',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('trade', fields.OneToOneField('models.Trade', source_field='trade_id', db_constraint=True, to_field='trade_id', related_name='tweets', on_delete=OnDelete.CASCADE)),
                ('source', fields.CharField(max_length=16)),
                ('query', fields.CharField(max_length=256)),
                ('count', fields.IntField(default=0)),
                ('tweets', fields.JSONField(default=list, encoder=JSON_DUMPS, decoder=loads)),
                ('error', fields.TextField(null=True, unique=False)),
                ('fetched_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'tweet_batches', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
